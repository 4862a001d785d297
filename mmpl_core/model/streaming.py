"""Moving per-layer data to the compute device one layer ahead: the KV cache kept in CPU memory, and DiT blocks whose
weights do not fit on the device (block swap).

Both plug into the layer loops of `wan_forward` and `encode_text` as `LayerStream`s: before layer l runs, each
stream's `prefetch(l + 1)` starts the copies the next layer needs, then `enter(l)` makes the compute stream wait for
layer l's copies (started one layer earlier), and `leave(l)` ends the layer. On CUDA the copies run on a side stream
(`CopyStream`) and overlap the previous layer's kernels; elsewhere they run synchronously, through the same code.

Ordering on CUDA, by construction: a copy into device memory starts only after everything enqueued on the compute
stream up to the `prefetch` call (so a buffer freed by an earlier layer is no longer read), and the compute stream
waits for an event recorded after the copy before using its result. Device tensors read by a copy (K/V written back
to CPU memory) are `record_stream`-ed on the copy stream so the allocator keeps them until the copy is done.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol, Sequence

import torch
from torch import nn

WEIGHT_STREAM_ATTRIBUTE = "mmpl_weight_stream"  # where `stream_blocks` attaches its BlockSwap to a module tree


class CopyStream:
    """Copies between CPU memory and `device`, on a side CUDA stream when `device` is CUDA (synchronous otherwise)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def pin(self) -> bool:
        """Whether CPU-side buffers should be pinned (asynchronous DMA needs page-locked memory)."""
        return self.stream is not None

    @contextlib.contextmanager
    def after_compute(self):
        """Copies issued inside run after all work enqueued so far on the compute stream, on the copy stream."""
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield

    def record(self):
        """An event marking the copies issued so far (None off CUDA, where they are already done)."""
        return None if self.stream is None else self.stream.record_event()

    def wait(self, event) -> None:
        """Make the compute stream wait for `event` from `record`."""
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)

    def keep_alive(self, tensor: torch.Tensor) -> None:
        """A device tensor read by copies on the copy stream must not be reused before they finish."""
        if self.stream is not None and tensor.device.type == "cuda":
            tensor.record_stream(self.stream)


class LayerStream(Protocol):
    def prefetch(self, layer: int) -> None:
        """Start moving what `layer` needs to the compute device (no-op when it is resident)."""

    def enter(self, layer: int) -> None:
        """Make `layer`'s data usable by the compute stream (waits for its copies)."""

    def leave(self, layer: int) -> None:
        """`layer`'s kernels are enqueued; its device copies may be recycled by later prefetches."""


def layers(blocks: Sequence[nn.Module], streams: Sequence[LayerStream]) -> Iterator[tuple[int, nn.Module]]:
    """(layer, block) pairs with every stream prefetching one layer ahead. Use inside `contextlib.closing` when the
    loop may stop early, so the current layer is left."""
    for stream in streams:
        stream.prefetch(0)
    for layer, block in enumerate(blocks):
        for stream in streams:
            if layer + 1 < len(blocks):
                stream.prefetch(layer + 1)
            stream.enter(layer)
        try:
            yield layer, block
        finally:
            for stream in streams:
                stream.leave(layer)


def weight_stream(model: nn.Module) -> "BlockSwap | None":
    return getattr(model, WEIGHT_STREAM_ATTRIBUTE, None)


class BlockSwap:
    """Block swap: the weights of blocks `on_device` … L−1 live in CPU memory (pinned on CUDA) and are copied, one
    block ahead, into one of two device buffers of a block's size; the block's parameters point at the buffer while
    it runs and back at their CPU copies afterwards (so `state_dict()` always reads the real weights).

    The device holds the resident blocks plus min(2, streamed blocks) buffers. All blocks must have the same
    parameter names, shapes and dtypes (true of a DiT).
    """

    def __init__(self, blocks: nn.ModuleList, on_device: int, device: torch.device | str):
        if not 0 <= on_device <= len(blocks):
            raise ValueError(f"blocks on device must lie in 0..{len(blocks)}, got {on_device}")
        self.copies = CopyStream(device)
        self.on_device = on_device
        self.blocks = blocks
        self.streamed = range(on_device, len(blocks))
        self._host: dict[int, dict[str, torch.Tensor]] = {}
        for layer in self.streamed:
            host = {}
            for name, tensor in _tensors(blocks[layer]).items():
                moved = tensor.detach().to("cpu")
                host[name] = moved.pin_memory() if self.copies.pin else moved
            self._host[layer] = host
            _point(blocks[layer], host)
        template = self._host[self.streamed[0]] if self.streamed else {}
        self._buffers = [{n: torch.empty_like(t, device=device) for n, t in template.items()}
                         for _ in range(min(2, len(self.streamed)))]
        self._ready: dict[int, object] = {}

    def _buffer(self, layer: int) -> dict[str, torch.Tensor]:
        return self._buffers[(layer - self.on_device) % len(self._buffers)]

    def prefetch(self, layer: int) -> None:
        if layer not in self.streamed or layer in self._ready:
            return
        buffer = self._buffer(layer)
        with self.copies.after_compute():
            for name, source in self._host[layer].items():
                buffer[name].copy_(source, non_blocking=True)
            self._ready[layer] = self.copies.record()

    def enter(self, layer: int) -> None:
        if layer not in self.streamed:
            return
        self.prefetch(layer)  # a forward may start at any layer's turn: nothing was prefetched for it yet
        self.copies.wait(self._ready.pop(layer))
        _point(self.blocks[layer], self._buffer(layer))

    def leave(self, layer: int) -> None:
        if layer in self.streamed:
            _point(self.blocks[layer], self._host[layer])

    def device_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for buffer in self._buffers for t in buffer.values())


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _point(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Make `module`'s parameters and buffers use `tensors` (same names) without replacing the Parameter objects."""
    for name, tensor in tensors.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf in owner._parameters:
            owner._parameters[leaf].data = tensor
        else:
            owner._buffers[leaf] = tensor


@torch.no_grad()
def stream_blocks(model: nn.Module, device: torch.device | str, on_device: int) -> BlockSwap | None:
    """Place a DiT on `device` with only its first `on_device` blocks resident; the others stream (`BlockSwap`,
    attached to the model and used by `wan_forward`/`encode_text`). Everything but the streamed blocks moves to
    `device`. Returns the BlockSwap (None when every block is resident)."""
    if not 0 <= on_device <= len(model.blocks):
        raise ValueError(f"blocks on device must lie in 0..{len(model.blocks)}, got {on_device}")
    streamed = set(range(on_device, len(model.blocks)))
    for name, child in model.named_children():
        if name != "blocks":
            child.to(device)
    for name, tensor in model.named_parameters(recurse=False):
        tensor.data = tensor.data.to(device)
    for layer, block in enumerate(model.blocks):
        if layer not in streamed:
            block.to(device)
    swap = BlockSwap(model.blocks, on_device, device) if streamed else None
    setattr(model, WEIGHT_STREAM_ATTRIBUTE, swap)
    return swap


__all__ = ["BlockSwap", "CopyStream", "LayerStream", "WEIGHT_STREAM_ATTRIBUTE", "layers", "stream_blocks",
           "weight_stream"]

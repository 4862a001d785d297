"""Self-attention keys and values of clean latent frames, addressed by latent frame index.

Only frames that some later group attends to get a slot (for the Wan T2V layout: frames 0..12, 19 and 20, i.e. 15
slots; frames 13..18 are never cached). Slots are assigned in the order given, so a layout that lists frames in the
order they are produced reads most visible sets as one contiguous slice, without a gather.

Placement (a runtime choice; results are bit-identical): "device" keeps the cache on the compute device; "cpu" keeps
it in CPU memory (pinned when computing on CUDA) and copies each layer's visible slots to the device one layer ahead
(`prefetch`, see `streaming`), so the device holds only the layers in flight. Storage dtype (a generation setting:
it changes the bits): "compute" stores K/V as computed; "float8_e4m3fn" stores them in 8 bits with one power-of-two
scale per (batch, frame, head), dequantised into the compute dtype on read.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .fp8 import FLOAT8, check_storage_dtype, dequantize, quantize
from .streaming import CopyStream

PLACEMENTS = ("device", "cpu")


def _runs(slots: Sequence[int]) -> list[tuple[int, int, int]]:
    """(position, first slot, length) of each run of consecutive slots in `slots`, in order."""
    runs: list[tuple[int, int, int]] = []
    for i, slot in enumerate(slots):
        if runs and runs[-1][1] + runs[-1][2] == slot and runs[-1][0] + runs[-1][2] == i:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((i, slot, 1))
    return runs


def _raw(t: torch.Tensor) -> torch.Tensor:
    """float8 tensors as bytes (index_copy/index_select have no float8 kernels on every device)."""
    return t.view(torch.uint8) if t.dtype == FLOAT8 else t


class FrameKVCache:
    """Per-layer K/V storage of shape [B, slots, tokens_per_frame, heads, head_dim] (float8 storage adds scales of
    shape [B, slots, heads], kept on the compute device), allocated on first write.

    device: the compute device (where K/V arrive and are read); storage lives there or, with placement "cpu", in
    CPU memory.
    """

    def __init__(self, frames: Sequence[int], num_layers: int, *, placement: str = "device",
                 storage_dtype: str = "compute", device: torch.device | str | None = None):
        if len(set(frames)) != len(frames):
            raise ValueError(f"FrameKVCache: duplicate frames in {list(frames)}")
        if placement not in PLACEMENTS:
            raise ValueError(f"KV cache placement must be one of {PLACEMENTS}, got {placement!r}")
        self.slot_of = {f: i for i, f in enumerate(frames)}
        self.num_layers = num_layers
        self.placement = placement
        self.float8 = check_storage_dtype(storage_dtype, "KV cache storage dtype") == "float8_e4m3fn"
        self.device = None if device is None else torch.device(device)  # None: the first write's device
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.scales: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers  # (keys, values) [B,S,H]
        self.written: set[int] = set()
        self.compute_dtype: torch.dtype | None = None
        self._copies: CopyStream | None = None
        self._staged: dict[int, tuple[tuple[int, ...], torch.Tensor, torch.Tensor, object]] = {}

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(self.slot_of)

    def _slots(self, frames: Iterable[int]) -> list[int]:
        try:
            return [self.slot_of[f] for f in frames]
        except KeyError as err:
            raise KeyError(f"frame {err.args[0]} has no slot in this KV cache (cached frames: {self.frames})") from None

    def _allocate(self, layer: int, k: torch.Tensor) -> None:
        if self.device is None:
            self.device = k.device
        if self._copies is None:
            self._copies = CopyStream(self.device)
        shape = (k.shape[0], len(self.slot_of), *k.shape[2:])
        dtype = FLOAT8 if self.float8 else k.dtype
        on_cpu = self.placement == "cpu"
        self.keys[layer], self.values[layer] = (
            torch.zeros(shape, dtype=dtype, device="cpu" if on_cpu else self.device,
                        pin_memory=on_cpu and self._copies.pin) for _ in range(2))
        if self.float8:
            self.scales[layer] = tuple(torch.ones(shape[:2] + shape[3:4], device=self.device) for _ in range(2))
        self.compute_dtype = k.dtype

    def write(self, layer: int, frames: Sequence[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the K/V of `frames` (k, v: [B, len(frames) * tokens_per_frame, H, D], frame-major).

        Frames without a slot are skipped: nothing attends to them (reading them later raises).
        """
        keep = [i for i, f in enumerate(frames) if f in self.slot_of]
        if not keep:
            return
        k = k.unflatten(1, (len(frames), -1))[:, keep]  # [B, kept, T, H, D], contiguous
        v = v.unflatten(1, (len(frames), -1))[:, keep]
        frames = [frames[i] for i in keep]
        if self.keys[layer] is None:
            self._allocate(layer, k)
        elif self.keys[layer].shape[0] != k.shape[0] or self.keys[layer].shape[2:] != k.shape[2:]:
            raise ValueError(f"KV cache holds {tuple(self.keys[layer].shape)}, cannot store frames of {tuple(k.shape)}")
        slots = self._slots(frames)
        staged = self._staged.get(layer)
        if staged is not None and set(staged[0]) & set(slots):
            del self._staged[layer]  # a copy of these slots made before this write is stale
        for i, (storage, x) in enumerate(((self.keys[layer], k), (self.values[layer], v))):
            if self.float8:
                x, scale = quantize(x, (2, 4))  # scale [B, kept, 1, H, 1]
                self.scales[layer][i][:, slots] = scale[:, :, 0, :, 0]
            self._store(storage, slots, x.to(storage.dtype))
        if layer == self.num_layers - 1:
            self.written.update(frames)

    def _store(self, storage: torch.Tensor, slots: list[int], x: torch.Tensor) -> None:
        if self.placement == "device":
            _raw(storage).index_copy_(1, torch.as_tensor(slots, device=storage.device), _raw(x))
            return
        with self._copies.after_compute():  # back to CPU memory, asynchronously on CUDA
            self._copies.keep_alive(x)
            for b in range(x.shape[0]):  # per batch row: contiguous on both sides, so the copy is one DMA
                for i, slot, n in _runs(slots):
                    _raw(storage)[b, slot : slot + n].copy_(_raw(x)[b, i : i + n], non_blocking=True)

    def prefetch(self, layer: int, frames: Sequence[int]) -> None:
        """Start copying `layer`'s K/V of `frames` to the compute device (placement "cpu"; otherwise a no-op).
        `read` waits for the copy; the copies of the layers in flight are all the device holds of the cache."""
        if self.placement != "cpu" or self.keys[layer] is None or not frames:
            return
        slots = tuple(sorted(self._slots(frames)))
        if layer in self._staged and self._staged[layer][0] == slots:
            return
        keys = self.keys[layer]
        staged = [torch.empty((keys.shape[0], len(slots), *keys.shape[2:]), dtype=keys.dtype, device=self.device)
                  for _ in range(2)]
        with self._copies.after_compute():
            for target, storage in zip(staged, (keys, self.values[layer])):
                self._copies.keep_alive(target)  # a copy dropped unread (stale, or at the end) is not reused early
                for b in range(keys.shape[0]):
                    for i, slot, n in _runs(slots):
                        _raw(target)[b, i : i + n].copy_(_raw(storage)[b, slot : slot + n], non_blocking=True)
            self._staged[layer] = (slots, *staged, self._copies.record())

    def read(self, layer: int, frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V of the visible `frames` in the compute dtype, each [B, len(frames) * tokens_per_frame, H, D] (order
        is irrelevant)."""
        missing = [f for f in frames if f not in self.written]
        if missing:
            raise RuntimeError(f"frames {missing} are visible but were never written to the KV cache")
        slots = sorted(self._slots(frames))
        if self.placement == "cpu":
            if self._staged.get(layer, (None,))[0] != tuple(slots):
                self.prefetch(layer, frames)
            _, k, v, ready = self._staged.pop(layer)
            self._copies.wait(ready)
        else:
            k, v = (_gather(t, slots) for t in (self.keys[layer], self.values[layer]))
        if self.float8:
            index = torch.as_tensor(slots, device=self.device)
            k, v = (dequantize(x, s.index_select(1, index)[:, :, None, :, None], self.compute_dtype)
                    for x, s in zip((k, v), self.scales[layer]))
        return k.flatten(1, 2), v.flatten(1, 2)

    def stream(self, frames: Sequence[int]) -> "VisibleFrames":
        """This cache as a `streaming.LayerStream` that prefetches `frames` one layer ahead."""
        return VisibleFrames(self, tuple(frames))

    def nbytes(self) -> int:
        """Bytes of the stored K/V and scales, wherever they are placed."""
        tensors = [t for t in self.keys + self.values if t is not None]
        tensors += [s for pair in self.scales if pair is not None for s in pair]
        return sum(t.numel() * t.element_size() for t in tensors)


def _gather(storage: torch.Tensor, slots: list[int]) -> torch.Tensor:
    """storage[:, slots]: a view when the slots are consecutive, else a gather."""
    if slots == list(range(slots[0], slots[0] + len(slots))):
        return storage[:, slots[0] : slots[0] + len(slots)]
    index = torch.as_tensor(slots, device=storage.device)
    return _raw(storage).index_select(1, index).view(storage.dtype)


class VisibleFrames:
    """A `FrameKVCache` read at fixed visible frames, as a layer stream (see `streaming.layers`)."""

    def __init__(self, cache: FrameKVCache, frames: tuple[int, ...]):
        self.cache, self.frames = cache, frames

    def prefetch(self, layer: int) -> None:
        self.cache.prefetch(layer, self.frames)

    def enter(self, layer: int) -> None:  # `read` waits for the layer's copy
        pass

    def leave(self, layer: int) -> None:
        pass


__all__ = ["PLACEMENTS", "FrameKVCache", "VisibleFrames"]

"""Self-attention keys and values of clean latent frames, addressed by latent frame index.

Only frames that some later group attends to get a slot (for the Wan T2V layout: frames 0..12, 19 and 20, i.e. 15
slots; frames 13..18 are never cached). Slots are assigned in the order given, so a layout that lists frames in the
order they are produced reads most visible sets as one contiguous slice, without a gather.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch


class FrameKVCache:
    """Per-layer K/V storage of shape [B, slots, tokens_per_frame, heads, head_dim], allocated on first write."""

    def __init__(self, frames: Sequence[int], num_layers: int):
        if len(set(frames)) != len(frames):
            raise ValueError(f"FrameKVCache: duplicate frames in {list(frames)}")
        self.slot_of = {f: i for i, f in enumerate(frames)}
        self.num_layers = num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.written: set[int] = set()

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(self.slot_of)

    def _slots(self, frames: Iterable[int]) -> list[int]:
        try:
            return [self.slot_of[f] for f in frames]
        except KeyError as err:
            raise KeyError(f"frame {err.args[0]} has no slot in this KV cache (cached frames: {self.frames})") from None

    def write(self, layer: int, frames: Sequence[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the K/V of `frames` (k, v: [B, len(frames) * tokens_per_frame, H, D], frame-major).

        Frames without a slot are skipped: nothing attends to them (reading them later raises).
        """
        keep = [i for i, f in enumerate(frames) if f in self.slot_of]
        k = k.unflatten(1, (len(frames), -1))[:, keep]
        v = v.unflatten(1, (len(frames), -1))[:, keep]
        frames = [frames[i] for i in keep]
        if not frames:
            return
        if self.keys[layer] is None:
            shape = (k.shape[0], len(self.slot_of), *k.shape[2:])
            self.keys[layer] = k.new_zeros(shape)
            self.values[layer] = v.new_zeros(shape)
        elif self.keys[layer].shape[0] != k.shape[0] or self.keys[layer].shape[2:] != k.shape[2:]:
            raise ValueError(f"KV cache holds {tuple(self.keys[layer].shape)}, cannot store frames of {tuple(k.shape)}")
        index = torch.as_tensor(self._slots(frames), device=k.device)
        self.keys[layer].index_copy_(1, index, k.to(self.keys[layer].dtype))
        self.values[layer].index_copy_(1, index, v.to(self.values[layer].dtype))
        if layer == self.num_layers - 1:
            self.written.update(frames)

    def read(self, layer: int, frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V of the visible `frames`, each [B, len(frames) * tokens_per_frame, H, D] (order is irrelevant)."""
        missing = [f for f in frames if f not in self.written]
        if missing:
            raise RuntimeError(f"frames {missing} are visible but were never written to the KV cache")
        slots = sorted(self._slots(frames))
        keys, values = self.keys[layer], self.values[layer]
        if slots == list(range(slots[0], slots[0] + len(slots))):
            k, v = keys[:, slots[0] : slots[0] + len(slots)], values[:, slots[0] : slots[0] + len(slots)]
        else:
            index = torch.as_tensor(slots, device=keys.device)
            k, v = keys.index_select(1, index), values.index_select(1, index)
        return k.flatten(1, 2), v.flatten(1, 2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)

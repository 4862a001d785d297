"""Time bins of a long video (one per segment) and the checks every metric applies to its input frames."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimeBins:
    """Contiguous frame ranges [start, stop) covering a video; `joins` are the first frames of bins 2.. (for a
    stitched long video: where one segment's new frames begin after the previous segment's last frame)."""

    bounds: tuple[tuple[int, int], ...]
    fps: float = 16.0
    block: int = 0  # pixel frames per latent frame of the decoder (Wan: 4, the first latent 1); 0 = unknown
    first_block: int = 1  # the first frame that begins a block (1 after a video's single first frame)

    def __post_init__(self):
        if not self.bounds:
            raise ValueError("TimeBins needs at least one bin")
        position = self.bounds[0][0]
        if position != 0:
            raise ValueError(f"TimeBins must start at frame 0, got {self.bounds[0]}")
        for start, stop in self.bounds:
            if start != position or stop - start < 2:
                raise ValueError(f"TimeBins must be contiguous bins of >= 2 frames, got {self.bounds}")
            position = stop
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.block < 0:
            raise ValueError(f"block must be >= 0, got {self.block}")

    @classmethod
    def uniform(cls, num_frames: int, bin_frames: int, fps: float = 16.0) -> "TimeBins":
        """Bins of `bin_frames` frames; the last bin takes the remainder (merged into the previous one if < 2)."""
        if bin_frames < 2 or num_frames < 2:
            raise ValueError(f"need bin_frames >= 2 and num_frames >= 2, got {bin_frames}, {num_frames}")
        starts = list(range(0, num_frames, bin_frames))
        if len(starts) > 1 and num_frames - starts[-1] < 2:
            starts.pop()
        return cls(tuple(zip(starts, starts[1:] + [num_frames])), fps)

    @classmethod
    def segments(cls, layout, num_segments: int, fps: float = 16.0) -> "TimeBins":
        """One bin per segment of a stitched video of `layout` (Wan 21 latents: 81 frames, then 76 per segment)."""
        from ..stitch import overlap_pixel_frames, segment_pixel_frames
        from ..vae import TEMPORAL_STRIDE

        first = segment_pixel_frames(layout)
        step = first - overlap_pixel_frames(layout)
        stops = [first + step * k for k in range(num_segments)]
        return cls(tuple(zip([0] + stops[:-1], stops)), fps, block=TEMPORAL_STRIDE)

    @property
    def num_frames(self) -> int:
        return self.bounds[-1][1]

    @property
    def joins(self) -> tuple[int, ...]:
        return tuple(start for start, _ in self.bounds[1:])

    def block_starts(self) -> frozenset[int]:
        """Frames that begin a new latent frame's decoded block (1, 5, 9, … for Wan; stitching keeps the phase,
        since segments advance by a multiple of 4 frames); empty when `block` is 0."""
        if not self.block:
            return frozenset()
        return frozenset(range(self.first_block, self.num_frames, self.block))

    def __len__(self) -> int:
        return len(self.bounds)

    def centres_seconds(self) -> list[float]:
        """Each bin's centre time in seconds (for plots)."""
        return [(start + stop - 1) / 2 / self.fps for start, stop in self.bounds]

    def ends_seconds(self) -> list[float]:
        return [stop / self.fps for _, stop in self.bounds]

    def reduce(self, per_frame: np.ndarray) -> np.ndarray:
        """Mean of a per-frame series [T] over each bin → [bins] (NaN-aware)."""
        if len(per_frame) != self.num_frames:
            raise ValueError(f"series has {len(per_frame)} values for {self.num_frames} frames")
        return np.array([np.nanmean(per_frame[a:b]) if np.isfinite(per_frame[a:b]).any() else np.nan
                         for a, b in self.bounds])


def check_frames(frames: np.ndarray, bins: TimeBins | None = None, name: str = "frames") -> np.ndarray:
    """Validate uint8 RGB frames [T, H, W, 3] (T >= 2), matching `bins` when given."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise ValueError(f"{name} must be uint8 RGB frames [T, H, W, 3], got {dtype} {shape}")
    if len(frames) < 2:
        raise ValueError(f"{name} needs at least 2 frames, got {len(frames)}")
    if bins is not None and bins.num_frames != len(frames):
        raise ValueError(f"{name} has {len(frames)} frames but the time bins cover {bins.num_frames}")
    return frames

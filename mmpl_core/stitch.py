"""Stitching decoded segments: consecutive segments share their bridged first latents' pixel frames.

Segment k+1's first `context_frames` latents are the re-encoded last 5 pixel frames of segment k, so its first 5
decoded frames repeat segment k's last 5. Segment 1 keeps all of its frames (the input image in I2V).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

from .bridge import bridge_pixel_frames
from .layout import SegmentLayout
from .vae import TEMPORAL_STRIDE


def segment_pixel_frames(layout: SegmentLayout) -> int:
    return 1 + TEMPORAL_STRIDE * (layout.num_frames - 1)


def overlap_pixel_frames(layout: SegmentLayout) -> int:
    return bridge_pixel_frames(layout.context_frames)


def kept_pixel_frames(layout: SegmentLayout, handoff: str = "terminal") -> int:
    """Pixel frames a segment decodes to: all 81 (terminal handoff), or up to its midpoint keyframes, 49 for Wan's
    layout (midpoint handoff: the next segment starts from them)."""
    if handoff == "midpoint":
        return 1 + TEMPORAL_STRIDE * layout.midpoint[-1]
    return segment_pixel_frames(layout)


def stitched_frame_count(layout: SegmentLayout, num_segments: int, handoff: str = "terminal") -> int:
    """81 + 76·(S − 1) for Wan's 21-latent segments; 49 + 44·(S − 1) with the midpoint handoff."""
    kept = kept_pixel_frames(layout, handoff)
    return kept + (kept - overlap_pixel_frames(layout)) * (num_segments - 1)


def stitch_stream(videos: Iterable[torch.Tensor], layout: SegmentLayout) -> Iterator[torch.Tensor]:
    """Yield each segment's new frames [3, T', H, W] as segments arrive in order (for streaming to a file).

    A segment decodes to 1 + 4·(n − 1) pixel frames for its first n latents (all of them, or up to its midpoint
    keyframes with the midpoint handoff); segments after the first drop the pixel frames they share with the one
    before."""
    overlap = overlap_pixel_frames(layout)
    valid = {1 + TEMPORAL_STRIDE * (n - 1) for n in range(layout.context_frames + 1, layout.num_frames + 1)}
    for k, video in enumerate(videos):
        if video.shape[1] not in valid:
            raise ValueError(f"segment {k} has {video.shape[1]} frames, expected 1 + 4·(n − 1) with n latent frames "
                             f"({layout.context_frames} < n <= {layout.num_frames})")
        yield video if k == 0 else video[:, overlap:]


def stitch(videos: Iterable[torch.Tensor], layout: SegmentLayout) -> torch.Tensor:
    """Concatenate decoded segments [3, T, H, W] into one video, dropping the repeated frames at every join."""
    return torch.cat(list(stitch_stream(videos, layout)), dim=1)


def keyframe_time(layout: SegmentLayout, segment: int, frame: int, fps: int, handoff: str = "terminal") -> float:
    """Seconds into the stitched video of latent `frame` of `segment` (the last pixel frame it decodes to)."""
    offset = segment * (kept_pixel_frames(layout, handoff) - overlap_pixel_frames(layout))
    return (offset + TEMPORAL_STRIDE * frame) / fps

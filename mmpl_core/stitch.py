"""Stitching decoded segments: consecutive segments share their bridged first latents' pixel frames.

Segment k+1's first `context_frames` latents are the re-encoded last 5 pixel frames of segment k, so its first 5
decoded frames repeat segment k's last 5. Segment 1 keeps all of its frames (the input image in I2V). In a loop the
last segment ends on segment 1's first 5 frames, so it drops them and the video plays on from its first frame.

Those shared frames show one moment twice, so they also measure the colour step a join brings: join correction
(`fix_joins`) maps the new segment's colours back to the previous one's by the per-channel statistics of the shared
frames, blended out over the first few frames.
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


def stitched_frame_count(layout: SegmentLayout, num_segments: int, handoff: str = "terminal", loop: bool = False) -> int:
    """81 + 76·(S − 1) for Wan's 21-latent segments; 49 + 44·(S − 1) with the midpoint handoff; a loop has 76·S
    (44·S): its last segment's repeat of the first frames is dropped too."""
    kept, overlap = kept_pixel_frames(layout, handoff), overlap_pixel_frames(layout)
    return kept + (kept - overlap) * (num_segments - 1) - (overlap if loop else 0)


def stitch_stream(videos: Iterable[torch.Tensor], layout: SegmentLayout, *, loop: bool = False,
                  fix_joins: int = 0) -> Iterator[torch.Tensor]:
    """Yield each segment's new frames [3, T', H, W] as segments arrive in order (for streaming to a file).

    A segment decodes to 1 + 4·(n − 1) pixel frames for its first n latents (all of them, or up to its midpoint
    keyframes with the midpoint handoff); segments after the first drop the pixel frames they share with the one
    before, and in a `loop` the last also drops the frames it shares with the first. `fix_joins` > 0: join
    correction over that many frames after each join (before the loop's). Any dtype: uint8 stays uint8."""
    overlap = overlap_pixel_frames(layout)
    valid = {1 + TEMPORAL_STRIDE * (n - 1) for n in range(layout.context_frames + 1, layout.num_frames + 1)}
    if fix_joins < 0:
        raise ValueError(f"fix_joins must be >= 0 frames, got {fix_joins}")
    first_head, previous, last = None, None, None
    for k, video in enumerate(videos):
        if video.shape[1] not in valid:
            raise ValueError(f"segment {k} has {video.shape[1]} frames, expected 1 + 4·(n − 1) with n latent frames "
                             f"({layout.context_frames} < n <= {layout.num_frames})")
        if k and fix_joins:
            video = carry_colour(video, previous[:, -overlap:], overlap, fix_joins, after=True)
        if last is not None:
            yield last
        if k == 0:
            first_head = video[:, :overlap]
        previous, last = video, (video if k == 0 else video[:, overlap:])
    if last is None:
        return
    if loop:
        if fix_joins:
            last = carry_colour(last, first_head, last.shape[1] - overlap, fix_joins, after=False)
        last = last[:, :-overlap]
    yield last


def carry_colour(video: torch.Tensor, reference: torch.Tensor, at: int, frames: int, after: bool) -> torch.Tensor:
    """Join correction: `video` [3, T, H, W] with its frames next to a join at frame `at` moved toward `reference`'s
    colours.

    The n frames (n = `reference`'s frame count) on the far side of the join, video[:, at − n:at] (after=True) or
    video[:, at:at + n] (after=False), show the same moment as `reference`; the per-channel affine map that gives
    them `reference`'s mean and standard deviation is applied with weight 1 at the join, fading linearly to 0 over
    `frames` frames: the frames from `at` on (after=True) or the frames before `at` (after=False)."""
    n = reference.shape[1]
    shared = (video[:, at - n:at] if after else video[:, at:at + n]).float()
    ref = reference.float()
    mean, std = shared.mean((1, 2, 3), keepdim=True), shared.std((1, 2, 3), keepdim=True).clamp_min(1e-3)
    scale, shift = ref.std((1, 2, 3), keepdim=True).clamp_min(1e-3) / std, ref.mean((1, 2, 3), keepdim=True)
    span = range(at, min(at + frames, video.shape[1])) if after else range(max(at - frames, 0), at)
    if not len(span):
        return video
    weights = torch.tensor([(frames - abs(t - (at if after else at - 1))) / frames for t in span])
    part = video[:, span.start:span.stop].float()
    moved = torch.lerp(part, (part - mean) * scale + shift, weights[None, :, None, None])
    if video.dtype == torch.uint8:
        moved = moved.round().clamp(0, 255)
    out = video.clone()
    out[:, span.start:span.stop] = moved.to(video.dtype)
    return out


def stitch(videos: Iterable[torch.Tensor], layout: SegmentLayout, *, loop: bool = False,
           fix_joins: int = 0) -> torch.Tensor:
    """Concatenate decoded segments [3, T, H, W] into one video, dropping the repeated frames at every join."""
    return torch.cat(list(stitch_stream(videos, layout, loop=loop, fix_joins=fix_joins)), dim=1)


def keyframe_time(layout: SegmentLayout, segment: int, frame: int, fps: int, handoff: str = "terminal") -> float:
    """Seconds into the stitched video of latent `frame` of `segment` (the last pixel frame it decodes to)."""
    offset = segment * (kept_pixel_frames(layout, handoff) - overlap_pixel_frames(layout))
    return (offset + TEMPORAL_STRIDE * frame) / fps

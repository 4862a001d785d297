"""README media from the embedded demo model; re-run after retraining:

    PYTHONPATH=. .venv/bin/python bench/readme_media.py [--out docs] [--threads 1]

- docs/demo.gif and docs/demo_keyframes.png: the main command's video (its prompt, 12 segments, seed 0), its first
  11 s, 2× upscaled, and the first rows of its keyframe contact sheet (`bash scripts/demo.sh` makes the same video).
- docs/loop.gif: a planned loop of 3 segments (the prompt of `bash scripts/demo.sh`, seed 0), 2× upscaled; the GIF
  repeats forever, and its last frame runs on into its first. The same as
  `mmpl generate --prompt "..." --segments 3 --loop --out loop.mp4`.
- docs/keyframe_targets.png: segment 2's keyframes planned freely, then with its terminal keyframe given as an
  image (`--keyframe 2:terminal=target.png`): the given image beside the planned keyframes, and the start of segment
  3, which follows the new terminal keyframes. Also writes docs/keyframe_target.png, the given image.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmpl_core.metrics.join_bench import main_command_prompt

SCALE = 2


def target_image() -> torch.Tensor:
    """A frame of the prompt's world with the objects where the plan should take them: [3, 64, 64] in [-1, 1]."""
    from mmpl_core.data.synthetic import Scene, SceneObject, render

    scene = Scene((SceneObject("circle", "red", 8.0, 14.0, 48.0, 0.0, 0.0),
                   SceneObject("square", "yellow", 8.0, 48.0, 14.0, 0.0, 0.0)),
                  ("navy", "black"), light_period=100.0, light_phase=0.0, pan=0.0)
    return render(scene, 1, 64, 64)[:, 0]


def _tile(image: torch.Tensor, label: str, outline=None) -> Image.Image:
    from mmpl_core.keyframes import to_uint8_image

    thumb = Image.fromarray(to_uint8_image(image)).resize((64 * SCALE, 64 * SCALE), Image.NEAREST)
    tile = Image.new("RGB", (thumb.width, thumb.height + 14), (24, 24, 24))
    tile.paste(thumb, (0, 0))
    draw = ImageDraw.Draw(tile)
    if outline:
        draw.rectangle((0, 0, thumb.width - 1, thumb.height - 1), outline=outline, width=3)
    draw.text((3, thumb.height + 1), label, fill=(200, 200, 200))
    return tile


def _row(title: str, tiles: list[Image.Image | None], gap: int = 4) -> Image.Image:
    width = 150 + sum((t.width if t else 64 * SCALE) + gap for t in tiles)
    row = Image.new("RGB", (width, tiles[-1].height + gap), (24, 24, 24))
    ImageDraw.Draw(row).multiline_text((4, 20), title, fill=(230, 230, 230), spacing=3)
    x = 150
    for tile in tiles:
        if tile is not None:
            row.paste(tile, (x, 0))
        x += (tile.width if tile else 64 * SCALE) + gap
    return row


def keyframe_figure(pipe, settings, out: Path) -> None:
    from mmpl_core.keyframes import encode_keyframe_image, target_frame
    from mmpl_core.plan import KeyframeTarget
    from mmpl_core.video_io import write_png

    layout, image = pipe.layout, target_image()
    frame = target_frame(layout, "terminal")
    free = pipe.plan(pipe.new_plan([main_command_prompt()], 3, settings))
    latent = encode_keyframe_image(pipe.vae, image, frame)
    given = free.with_target(1, KeyframeTarget(frame, latent, label="target.png"))
    held = pipe.plan(given, start=1)
    frames = layout.keyframes
    rows = []
    for title, plan in (("S2 planned freely", free), ("S2 with its terminal\nkeyframe given", held)):
        shown = pipe.keyframe_images(plan, 1)
        tiles = [_tile(img, f"f{f}", outline=(255, 200, 0) if plan is held and f == frame else None)
                 for f, img in zip(frames, shown)]
        start = pipe.keyframe_images(plan, 2)[:2]  # the next segment's first frames: its bridged start
        given_tile = _tile(image, "given image", outline=(255, 200, 0)) if plan is held else None
        rows.append(_row(title, [given_tile, *tiles, *[_tile(img, f"S3 f{f}") for f, img in zip(frames[:2], start)]]))
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (24, 24, 24))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    write_png(np.asarray(sheet), out / "keyframe_targets.png")
    Image.fromarray(((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(
        out / "keyframe_target.png")
    print(f"wrote {out / 'keyframe_targets.png'} and {out / 'keyframe_target.png'}")


def loop_gif(pipe, settings, out: Path) -> None:
    from mmpl_core.joins import format_join_report, join_report
    from mmpl_core.video_io import to_uint8_frames, write_gif

    looped = dataclasses.replace(settings, loop=True)
    plan = pipe.populate(pipe.plan(pipe.new_plan([main_command_prompt()], 3, looped)))
    video = to_uint8_frames(pipe.decode(plan))
    print(format_join_report(join_report(video, plan.layout, len(plan), loop=True)))
    print(f"wrote {write_gif(video, out / 'loop.gif', fps=settings.fps, scale=SCALE)}: {len(video)} frames")


def demo_media(pipe, settings, out: Path, seconds: float = 11.0, rows: int = 4) -> None:
    from mmpl_core.keyframes import contact_sheet
    from mmpl_core.video_io import to_uint8_frames, write_gif

    plan = pipe.populate(pipe.plan(pipe.new_plan([main_command_prompt()], 12, settings)))
    video = to_uint8_frames(pipe.decode(plan))[: int(seconds * settings.fps)]
    print(f"wrote {write_gif(video, out / 'demo.gif', fps=settings.fps, scale=SCALE)}: {len(video)} frames")
    keyframes = [pipe.keyframe_images(plan, k) for k in range(rows)]
    Image.fromarray(contact_sheet(keyframes, plan.layout, settings.fps, plan.layout.keyframes)).save(
        out / "demo_keyframes.png")


def main(argv=None) -> int:
    from mmpl_core.demo import load_demo_pipeline
    from mmpl_core.plan import GenerationSettings
    from mmpl_core.sampling import SamplerConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe, bundle = load_demo_pipeline("mmpl")
    settings = GenerationSettings(seed=0, height=bundle.size, width=bundle.size, sampler=SamplerConfig(
        steps=bundle.steps, shift=bundle.shift, guidance=bundle.guidance))
    args.out.mkdir(parents=True, exist_ok=True)
    demo_media(pipe, settings, args.out)
    loop_gif(pipe, settings, args.out)
    keyframe_figure(pipe, settings, args.out)
    print(f"models: {bundle.dit.name} (fingerprint {pipe.fingerprint})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's latent codec: the windowed decoder reconstructs held-out synthetic videos better than the block
decoder, and without a jump every 4 frames (the flicker the block decoder has), on the shipped codec."""
import torch

from mmpl_core.data.pca_latents import PCALatentSpace, T_STRIDE, psnr, windows
from mmpl_core.data.synthetic import make_batch
from mmpl_core.demo import DemoBundle


def block_jump(video: torch.Tensor) -> float:
    """Mean |frame difference| where a new 4-frame block starts over the mean inside blocks ([B, 3, T, H, W])."""
    diffs = (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))  # diffs[i]: frame i+1 − frame i
    starts = torch.arange(diffs.shape[0]) % T_STRIDE == 0  # frames 1, 5, 9 … begin a block (frame 0 is alone)
    return (diffs[starts].mean() / diffs[~starts].mean()).item()


def test_shipped_window_decoder_is_smooth_and_sharper_than_the_block_decoder():
    codec = PCALatentSpace.load(DemoBundle.load("mmpl").codec)
    assert codec.window_decoder is not None
    video, _ = make_batch(555, 8, 33)  # held out: the decoder was fitted on make_batch(10000 + i, ...)
    latents = codec.encode(video)
    window, block = codec.decode(latents), codec.block_decoder().decode(latents)
    assert psnr(window, video) > psnr(block, video) + 0.5
    truth = block_jump(video)
    assert block_jump(block) > 1.8 * truth and block_jump(window) < 1.3 * truth


def test_windows_gather_each_positions_neighbourhood():
    latents = torch.arange(2 * 16 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 16, 3, 2, 2)
    x = windows(latents)  # [B, F, h, w, 16·27 + 1]
    assert x.shape == (2, 3, 2, 2, 16 * 27 + 1) and torch.all(x[..., -1] == 1)
    centre = x[1, 1, 0, 1, :-1].reshape(16, 27)[:, 13]  # the middle of the 3×3×3 window is the position itself
    assert torch.equal(centre, latents[1, :, 1, 0, 1])

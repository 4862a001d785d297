"""Parity of the MMPL forward: against diffusers, cached vs masked, and explicit positions."""
import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from mmpl_core.layout import WAN_T2V
from mmpl_core.model import FrameKVCache, build_random_model, encode_text, get_config, wan_forward


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def tiny():
    return build_random_model(get_config("tiny"), seed=3)


def _inputs(frames, batch=2, size=8, text_len=16, text_dim=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, frames, size, size, generator=g)
    ctx = torch.randn(batch, text_len, text_dim, generator=g)
    return x, ctx


def _diffusers_twin(model, cfg):
    ref = WanTransformer3DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
    )
    converted = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in model.state_dict().items()})
    ref.load_state_dict(converted, strict=True)
    return ref.eval()


@pytest.mark.parametrize("size", ["tiny", "micro"])
def test_parity_with_diffusers_contiguous_positions(size):
    cfg = get_config(size)
    model = build_random_model(cfg, seed=11)
    ref = _diffusers_twin(model, cfg)
    x, ctx = _inputs(5, text_dim=cfg.text_dim)
    t = torch.tensor([937.0, 212.0])
    with torch.no_grad():
        expected = ref(x, t, ctx, return_dict=False)[0]
        got = wan_forward(model, x, range(5), t, encode_text(model, ctx))
    assert got.shape == expected.shape == x.shape
    assert rel_err(got, expected) <= 1e-5


def test_parity_with_diffusers_per_frame_timesteps(tiny):
    cfg = get_config("tiny")
    ref = _diffusers_twin(tiny, cfg)
    x, ctx = _inputs(4)
    t_frame = torch.tensor([[0.0, 0.0, 640.0, 640.0], [999.0, 500.0, 250.0, 10.0]])
    tokens_per_frame = (8 // 2) * (8 // 2)
    with torch.no_grad():
        expected = ref(x, t_frame.repeat_interleave(tokens_per_frame, 1), ctx, return_dict=False)[0]
        got = wan_forward(tiny, x, range(4), t_frame, encode_text(tiny, ctx))
    assert rel_err(got, expected) <= 1e-5


@pytest.mark.parametrize("query_group", ["plan", "head", "tail"])
def test_parity_cached_path_equals_masked_uncached_path(tiny, query_group):
    """Context frames written once to the cache + the query chunk == one masked forward over all frames."""
    layout = WAN_T2V
    names = [g.name for g in layout.groups]
    q_index = names.index(query_group)
    involved = [g for g in layout.groups[: q_index + 1]]
    frames = sorted(f for g in involved for f in g.frames)
    x, ctx = _inputs(layout.num_frames, batch=1, seed=5)
    text = encode_text(tiny, ctx)
    t_query = 437.0
    query = layout.groups[q_index]

    # uncached: all involved frames in one sequence, context at t=0, the query group at t, mask from the layout
    vis = torch.tensor(layout.visibility())
    mask = vis[frames][:, frames]
    t_frames = torch.tensor([[t_query if f in query.frames else 0.0 for f in frames]])
    with torch.no_grad():
        full = wan_forward(tiny, x[:, :, frames], frames, t_frames, text, frame_mask=mask)
    expected = full[:, :, [frames.index(f) for f in query.frames]]

    # cached: each earlier group writes its clean K/V once (t=0), then the query chunk attends to what it sees
    cache = FrameKVCache([f for g in involved[:-1] for f in g.frames], tiny_layers := len(tiny.blocks))
    with torch.no_grad():
        for g in involved[:-1]:
            wan_forward(tiny, x[:, :, list(g.frames)], g.frames, torch.zeros(1), text,
                        cache=cache, visible=g.sees, write_cache=True, return_output=False)
        got = wan_forward(tiny, x[:, :, list(query.frames)], query.frames, torch.tensor([t_query]), text,
                          cache=cache, visible=query.sees)
    assert tiny_layers == 2
    assert rel_err(got, expected) <= 1e-5


def test_parity_hidden_terminal_frames_matter(tiny):
    """The head group's result changes if it is (wrongly) allowed to see the terminal frames 19, 20."""
    layout = WAN_T2V
    x, ctx = _inputs(21, batch=1, seed=9)
    text = encode_text(tiny, ctx)
    cache = FrameKVCache(list(range(4)) + [10, 11, 12, 19, 20], len(tiny.blocks))
    with torch.no_grad():
        for g in layout.groups[:2]:
            wan_forward(tiny, x[:, :, list(g.frames)], g.frames, torch.zeros(1), text,
                        cache=cache, visible=g.sees, write_cache=True)
        head = layout.groups[2]
        hidden = wan_forward(tiny, x[:, :, list(head.frames)], head.frames, torch.tensor([500.0]), text,
                             cache=cache, visible=head.sees)
        shown = wan_forward(tiny, x[:, :, list(head.frames)], head.frames, torch.tensor([500.0]), text,
                            cache=cache, visible=head.sees + (19, 20))
    assert rel_err(hidden, shown) > 1e-3


def test_parity_positions_are_used(tiny):
    """Planning frames at their true positions 2,3,10,11,12,19,20 differ from the same frames at 0..6."""
    x, ctx = _inputs(7, batch=1, seed=2)
    text = encode_text(tiny, ctx)
    t = torch.tensor([700.0])
    with torch.no_grad():
        true_pos = wan_forward(tiny, x, (2, 3, 10, 11, 12, 19, 20), t, text)
        packed = wan_forward(tiny, x, range(7), t, text)
        shifted = wan_forward(tiny, x, (7, 8, 15, 16, 17, 24, 25), t, text)
    assert rel_err(true_pos, packed) > 1e-3
    # RoPE is relative: shifting every position by the same amount changes nothing (up to rounding)
    assert rel_err(shifted, true_pos) <= 1e-5


def test_parity_forward_rejects_bad_arguments(tiny):
    x, ctx = _inputs(2, batch=1)
    text = encode_text(tiny, ctx)
    with pytest.raises(ValueError, match="positions"):
        wan_forward(tiny, x, [0], torch.zeros(1), text)
    with pytest.raises(ValueError, match="KV cache"):
        wan_forward(tiny, x, [0, 1], torch.zeros(1), text, visible=[5])
    cache = FrameKVCache([0, 1, 2], len(tiny.blocks))
    with pytest.raises(ValueError, match="also in the chunk"):
        wan_forward(tiny, x, [0, 1], torch.zeros(1), text, cache=cache, visible=[1])
    with pytest.raises(RuntimeError, match="never written"):
        wan_forward(tiny, x, [0, 1], torch.zeros(1), text, cache=cache, visible=[2])

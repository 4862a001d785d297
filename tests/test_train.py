"""Training: teacher-forcing masks from layouts, a loss that goes down, checkpoints that reload exactly."""
import pytest
import torch

from mmpl_core.layout import WAN_I2V, WAN_T2V, WAN_T2V_NO_MID, ar_layout, mmpl_layout
from mmpl_core.model import build_random_model, get_config
from mmpl_core.train.loop import Trainer, TrainConfig, select_trainable
from mmpl_core.train.masks import materialize_block_mask, teacher_forcing_mask, token_mask

T2V_STEPS = [0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1, 3, 3, 3, 3, 3, 3, 1, 1]


def reference_rule(steps, hide_from_step=2, hidden=(19, 20)):
    """The official training mask (reference §1.4), cell by cell, over [21 clean | 21 noisy]."""
    n = len(steps)
    allowed = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    for q in range(2 * n):
        for k in range(2 * n):
            sq, sk = steps[q % n], steps[k % n]
            q_clean, k_clean = q < n, k < n
            if q_clean:
                ok = k_clean and sk <= sq
            else:
                ok = (not k_clean and sk == sq) or (k_clean and sk < sq)
            if sq == hide_from_step and k_clean and k % n in hidden:
                ok = False
            allowed[q, k] = ok
    return allowed


def test_train_mask_of_t2v_layout_matches_reference_rules_cell_by_cell():
    assert torch.equal(teacher_forcing_mask(WAN_T2V), reference_rule(T2V_STEPS))


def test_train_mask_follows_any_layout():
    for layout in (WAN_I2V, WAN_T2V_NO_MID, ar_layout(13), mmpl_layout(9)):
        mask = teacher_forcing_mask(layout)
        n = layout.num_frames
        vis = torch.tensor(layout.visibility())
        # noisy queries: own group's noisy frames and the clean frames the group sees — the inference visibility
        noisy_own = mask[n:, n:]
        noisy_clean = mask[n:, :n]
        assert torch.equal(noisy_own | noisy_clean, vis)
        assert not mask[:n, n:].any()  # clean frames never see noisy ones


def test_train_flex_block_mask_equals_sdpa_mask():
    pytest.importorskip("torch.nn.attention.flex_attention")
    for layout in (WAN_T2V, ar_layout(13)):
        frame_mask = teacher_forcing_mask(layout)
        assert torch.equal(materialize_block_mask(frame_mask, 6), token_mask(frame_mask, 6))
    additive = token_mask(teacher_forcing_mask(WAN_T2V), 2, additive=True)
    assert additive.dtype == torch.float32 and set(additive.unique().tolist()) == {0.0, float("-inf")}


def _fixed_batch(layout, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 16, layout.num_frames, 4, 4, generator=g)
    x0[:, :, 1:] = x0[:, :, :1] * 0.8 + 0.2 * x0[:, :, 1:]  # temporally correlated, so context helps
    return x0, torch.randn(batch, 8, 32, generator=g)


class FixedBatch:
    def __init__(self, layout):
        self.data = _fixed_batch(layout)

    def batch(self, step, size):
        return self.data


def test_train_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    layout = mmpl_layout(9)
    model = build_random_model(get_config("micro"), seed=0)
    config = TrainConfig(steps=60, batch=2, lr=3e-3, warmup=5, log_every=10, save_every=1000, prompt_dropout=0.0)
    trainer = Trainer(model, layout, config, tmp_path)
    records = []
    trainer.fit(FixedBatch(layout), on_log=records.append)
    assert trainer.step == 60 and len(records) == 6
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    assert (tmp_path / "loss.jsonl").read_text().count("\n") == len(records)


def test_train_checkpoint_reloads_bit_identically(tmp_path):
    layout = ar_layout(6, chunk=2)
    config = TrainConfig(steps=3, batch=2, warmup=1, save_every=100)
    trainer = Trainer(build_random_model(get_config("micro"), seed=1), layout, config, tmp_path)
    trainer.fit(FixedBatch(layout))
    resumed = Trainer(build_random_model(get_config("micro"), seed=2), layout, config, tmp_path)
    assert resumed.load() and resumed.step == 3
    for (name, a), b in zip(trainer.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(torch.equal(a, b) for a, b in zip(trainer.ema, resumed.ema))
    # both continue identically
    x0, text = FixedBatch(layout).batch(3, 2)
    assert trainer.train_step(x0, text) == resumed.train_step(x0, text)


def test_train_parameter_policies():
    model = build_random_model(get_config("micro"), seed=0)
    qk = select_trainable(model, "qk")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".self_attn." in n and n.split(".")[-2] in ("q", "k", "norm_q", "norm_k") for n in names)
    assert len(qk) == len(names)
    select_trainable(model, "self_attn")
    assert all(".self_attn." in n for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="policy"):
        TrainConfig(policy="lora")

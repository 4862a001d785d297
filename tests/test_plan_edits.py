"""Plan edits as data (the Keyframe Editor's JSON), prompt banks (host-supplied embeddings), parallel populating
and the populate cache helpers that the ComfyUI nodes build on."""
import json

import pytest
import torch

from mmpl_core.edits import EditError, apply_edits, parse_edits
from mmpl_core.populate import adopt_populated, plan_identity
from mmpl_core.prompt_bank import PromptBank, embedding_label
from mmpl_core.text import HashedTextEncoder

from test_long_video import SETTINGS, pipe, planned  # noqa: F401 — shared fixtures


def _equal(a, b):
    return a is None and b is None or (a.known == b.known and torch.equal(a.latents.nan_to_num(), b.latents.nan_to_num()))


# --- edits ------------------------------------------------------------------------------------------------------
def test_parse_edits_reads_every_op_and_rejects_bad_fields():
    doc = {"edits": [{"op": "lock", "segment": 0}, {"op": "reroll", "segment": 2, "seed": 7},
                     {"op": "prompt", "segment": 1, "text": "blue"},
                     {"op": "replace", "segment": 1, "frame": 4, "image": 0}]}
    edits = parse_edits(json.dumps(doc))
    assert [e.op for e in edits] == ["lock", "reroll", "prompt", "replace"] and edits[1].seed == 7
    assert parse_edits("") == [] and parse_edits('{"edits": []}') == []
    for bad, words in [("{", "not valid JSON"), ('[{"op": "explode", "segment": 0}]', "edit 0"),
                       ('[{"op": "reroll", "segment": 0}]', "needs 'seed'"),
                       ('[{"op": "lock", "segment": "one"}]', "'segment' must be int"),
                       ('[{"op": "lock", "segment": true}]', "'segment' must be int")]:
        with pytest.raises(EditError, match=words):
            parse_edits(bad)


def test_apply_edits_locks_rerolls_and_sets_where_replanning_starts(pipe, planned):
    assert planned.replan_start() == 3
    edited = apply_edits(planned, parse_edits('[{"op": "lock", "segment": 1}, {"op": "reroll", "segment": 2, "seed": 9}]'))
    assert edited.segments[1].locked and edited.segments[2].seed == 9 and edited.segments[2].latents is None
    assert edited.replan_start() == 1 and planned.replan_start() == 3  # the input plan is untouched
    replanned = pipe.plan(edited, start=edited.replan_start())
    for k in (0, 1):  # before the re-roll nothing changes: segment 1 is locked, segment 0 precedes the edit
        assert _equal(replanned.segments[k].latents, planned.segments[k].latents)
    assert not _equal(replanned.segments[2].latents, planned.segments[2].latents)
    assert edited.changed_segments(planned) == [2] and replanned.changed_segments(planned) == [2]
    assert replanned.first_difference(planned) == 2 and planned.changed_segments(planned) == []
    assert planned.extended(5, "more").changed_segments(planned) == [3, 4]


def test_replace_edit_encodes_the_image_into_the_keyframe(pipe, planned):
    frame = pipe.layout.keyframes[-1]
    latent = torch.full((16, 4, 4), 0.5)
    calls = []

    def encode_image(ref, f):
        calls.append((ref, f))
        return latent

    edited = apply_edits(planned, parse_edits(json.dumps([{"op": "replace", "segment": 0, "frame": frame, "image": 3}])),
                         encode_image=encode_image)
    assert calls == [(3, frame)] and edited.segments[0].locked
    assert torch.equal(edited.segments[0].latents.latents[:, frame], latent)
    with pytest.raises(EditError, match="edit 0 .*not a keyframe"):
        apply_edits(planned, parse_edits('[{"op": "replace", "segment": 0, "frame": 99, "image": 0}]'),
                    encode_image=encode_image)
    with pytest.raises(EditError, match="segments 0..2"):
        apply_edits(planned, parse_edits('[{"op": "lock", "segment": 5}]'))
    with pytest.raises(EditError, match="needs images"):
        apply_edits(planned, parse_edits(f'[{{"op": "replace", "segment": 0, "frame": {frame}, "image": 0}}]'))


def test_replacing_bridged_start_frames_is_refused_naming_segment_and_frame(pipe, planned):
    """Frames 0..context-1 of a later segment come from the bridge of the previous segment's terminal keyframes; an
    edit there would be overwritten by the next re-plan, so it is refused. Segment 0's are the user's to replace."""
    latent = torch.zeros(16, 4, 4)
    first = pipe.layout.keyframes[0]
    assert first < pipe.layout.context_frames
    edit = [{"op": "replace", "segment": 1, "frame": first, "image": 0}]
    with pytest.raises(EditError, match=rf"edit 0 .*frame {first} of segment 1 is one of the 2 latents the VAE bridge "
                                        r"makes from segment 0's terminal keyframes"):
        apply_edits(planned, parse_edits(json.dumps(edit)), encode_image=lambda ref, f: latent)
    edit[0]["segment"] = 0
    edited = apply_edits(planned, parse_edits(json.dumps(edit)), encode_image=lambda ref, f: latent)
    assert torch.equal(edited.segments[0].latents.latents[:, first], latent)


# --- prompt bank ------------------------------------------------------------------------------------------------
def test_prompt_bank_names_embeddings_by_content_and_round_trips(tmp_path):
    e = torch.randn(1, 8, 32)
    bank, label = PromptBank().with_embedding(e)
    assert label == embedding_label(e.clone()) and torch.equal(bank.encode(label), e)
    _, other = bank.with_embedding(e + 1e-3)
    assert other != label
    with pytest.raises(ValueError, match="no embedding for prompt 'embedding:"):
        bank.encode(other)
    with pytest.raises(ValueError, match="no embedding for prompt 'a red circle'"):
        bank.encode("a red circle")  # plain text needs a fallback encoder
    with_text = PromptBank(fallback=HashedTextEncoder(dim=32, text_len=8)).merged(bank)
    assert torch.equal(with_text.encode("a red circle"), HashedTextEncoder(dim=32, text_len=8).encode("a red circle"))
    loaded = PromptBank.load(bank.save(tmp_path / "bank.safetensors"))
    assert loaded.labels == [label] and torch.equal(loaded.encode(label), e)
    from safetensors.torch import save_file
    save_file({label: e + 1}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="does not match its contents"):
        PromptBank.load(tmp_path / "bad.safetensors")


def test_pipeline_runs_on_a_prompt_bank_like_on_a_text_encoder(pipe):
    encoder = HashedTextEncoder(dim=32, text_len=8)
    bank, label = PromptBank().with_embedding(encoder.encode("a red circle"))
    bank, negative = bank.with_embedding(encoder.encode("blur"))
    from mmpl_core.pipeline import MMPLPipeline
    banked = MMPLPipeline(pipe.model, pipe.vae, pipe.layout, bank, negative_prompt=negative)
    by_text = pipe.plan(pipe.new_plan(["a red circle"], 1, SETTINGS))
    by_bank = banked.plan(banked.new_plan([label], 1, SETTINGS))
    assert _equal(by_text.segments[0].latents, by_bank.segments[0].latents)


# --- the populate cache -----------------------------------------------------------------
def test_adopt_populated_takes_matching_finished_segments_only(pipe, planned):
    populated = pipe.populate(planned, segments=[0, 2])
    assert plan_identity(planned) == plan_identity(populated)  # populating does not change what a plan means
    adopted = adopt_populated(planned, populated)
    assert adopted.statuses() == ["populated", "planned", "populated"]
    rerolled = planned.reroll(2, 5)
    assert plan_identity(rerolled) != plan_identity(planned)
    assert adopt_populated(rerolled, populated).statuses() == ["populated", "planned", "empty"]


def test_segment_selection_reads_all_numbers_and_ranges():
    from mmpl_core.plan import parse_segment_selection

    assert parse_segment_selection("all", 4) == parse_segment_selection(None, 4) == [0, 1, 2, 3]
    assert parse_segment_selection("1,3-4", 5) == [0, 2, 3] and parse_segment_selection("2,", 3) == [1]
    with pytest.raises(ValueError, match="outside 1..3"):
        parse_segment_selection("2-4", 3)
    with pytest.raises(ValueError, match="1-based numbers"):
        parse_segment_selection("one", 3)

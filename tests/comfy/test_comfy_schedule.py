"""One scheduler in ComfyUI: Macro Chain and Content Populator run the core's task graph over worker threads with a
model replica per device. Through the real server with "cpu,cpu": the same bits as one device for every mode and
CFG setting, populating while planning, a cancel that stops every device and resumes, and a failing device whose
tasks move to another."""
from __future__ import annotations

import copy

import pytest
import torch
from demo_graphs import demo_chain, with_scheduler

from mmpl_core.plan_store import load_plan

pytestmark = pytest.mark.comfy
AUTO = "auto (chosen by simulation)"


def chain(name: str, devices: str | None, *, segments: int = 3, seed: int = 31, steps: int = 3, mode="throughput",
          cfg_branches="batched", policy=AUTO, populate="while planning", populator_devices: bool = True) -> dict:
    """Demo model → Macro Chain (guided, on `devices`, or on the model's own device) → Content Populator → Save Plan."""
    prompt = demo_chain(segments, seed, steps)
    prompt["6"]["inputs"].update(cfg=3.0, sampler="unipc", populate=populate)
    prompt["8"] = {"class_type": "MMPL_ContentPopulator", "inputs": {"mmpl_model": ["1", 0], "plan": ["6", 0],
                                                                     "segments": "all"}}
    prompt["9"] = {"class_type": "MMPL_SavePlan", "inputs": {"plan": ["8", 0], "name": f"mmpl/schedule_{name}"}}
    if devices is not None:
        with_scheduler(prompt, devices, mode=mode, cfg_branches=cfg_branches, policy=policy)
        if populator_devices:
            prompt["8"]["inputs"]["devices"] = ["7", 0]
    return prompt


def saved(server, name: str):
    return load_plan(server.base_dir / "output" / "mmpl" / f"schedule_{name}")


def same(a, b) -> bool:
    return a.statuses() == b.statuses() and all(
        x.latents.known == y.latents.known and torch.equal(x.latents.latents.nan_to_num(0), y.latents.latents.nan_to_num(0))
        for x, y in zip(a.segments, b.segments))


def progress_nodes(result) -> dict[str, int]:
    """node → the largest progress total it reported."""
    out = {}
    for m in result.messages:
        if m["type"] == "progress":
            out[m["data"]["node"]] = max(out.get(m["data"]["node"], 0), m["data"]["max"])
    return out


@pytest.mark.parametrize("mode,cfg_branches,policy", [
    ("throughput", "batched", AUTO), ("throughput", "split-plan", "greedy-split"), ("memory", "split", "split-all+eager"),
])
def test_two_devices_give_the_bits_of_one(comfy_server, mode, cfg_branches, policy):
    """Review first on one device vs populate-while-planning on "cpu,cpu" (with the mode's CFG setting shared
    between the two threads where the policy says so)."""
    one = chain(f"one_{mode}_{cfg_branches}", "cpu", mode=mode, cfg_branches=cfg_branches, populate="review first (plan only)")
    two = chain(f"two_{mode}_{cfg_branches}", "cpu,cpu", mode=mode, cfg_branches=cfg_branches, policy=policy)
    for prompt in (one, two):
        result = comfy_server.client.run(prompt)
        assert result.error is None, result.error
    a, b = saved(comfy_server, f"one_{mode}_{cfg_branches}"), saved(comfy_server, f"two_{mode}_{cfg_branches}")
    assert a.statuses() == ["populated"] * 3 and same(a, b)
    assert a.settings.cfg_branches == cfg_branches and a.settings.handoff == {"throughput": "terminal",
                                                                              "memory": "midpoint"}[mode]


def test_populating_while_planning_leaves_the_populator_nothing_to_do(comfy_server):
    result = comfy_server.client.run(chain("overlap", "cpu,cpu", seed=32))
    assert result.error is None, result.error
    steps = progress_nodes(result)
    assert steps["6"] == 3 * (2 + 1 + 1 + 3 * 2)  # 3 steps per group: initial + plan, 2 plans, 3 × (head + tail)
    populator = [m["data"] for m in result.messages if m["type"] == "progress" and m["data"]["node"] == "8"]
    assert [(d["value"], d["max"]) for d in populator] == [(1, 1)]  # shown done at once
    assert saved(comfy_server, "overlap").statuses() == ["populated"] * 3


def test_cancel_stops_every_device_and_the_next_run_resumes(comfy_server):
    prompt = chain("cancel", "cpu,cpu", segments=4, seed=33, steps=4)

    def cancel_midway(message):
        data = message.get("data", {})
        if message["type"] == "progress" and data.get("node") == "6" and data["value"] == 20:
            comfy_server.client.interrupt()

    first = comfy_server.client.run(prompt, on_message=cancel_midway)
    assert "execution_interrupted" in first.message_types
    after_cancel = [m for m in first.messages[first.message_types.index("execution_interrupted"):]
                    if m["type"] == "progress"]
    assert not after_cancel, "no device kept stepping after the cancel"
    second = comfy_server.client.run(copy.deepcopy(prompt))
    assert second.error is None, second.error
    assert progress_nodes(second)["6"] < progress_nodes(first)["6"]  # only what the cancel left undone runs again
    reference = chain("cancel_reference", "cpu", segments=4, seed=33, steps=4)
    assert comfy_server.client.run(reference).error is None
    assert same(saved(comfy_server, "cancel"), saved(comfy_server, "cancel_reference"))


def test_a_failing_device_has_its_tasks_retried_and_an_error_names_device_and_segment(comfy_server):
    """A "meta" device builds a replica but cannot produce values: its tasks fail and move to the CPU worker."""
    result = comfy_server.client.run(chain("meta", "cpu,meta", seed=34))
    assert result.error is None, result.error
    reference = chain("meta_reference", "cpu", seed=34)
    assert comfy_server.client.run(reference).error is None
    assert same(saved(comfy_server, "meta"), saved(comfy_server, "meta_reference"))

    failing = comfy_server.client.run(chain("meta_only", "meta", seed=35))
    message = failing.error["exception_message"]
    assert failing.error["node_type"] == "MMPL_MacroChain"
    assert "(segment 1) failed 3 times; last on worker 0 (meta)" in message and "run again to resume" in message


def test_sampling_nodes_send_previews_while_they_run(comfy_server):
    """As KSampler does, every sampling node sends a preview of the chunk being denoised with its progress (binary
    websocket messages holding a JPEG), here from both devices' threads."""
    result = comfy_server.client.run(chain("previews", "cpu,cpu", segments=2, seed=36))
    assert result.error is None, result.error
    jpegs = [frame for frame in result.binary if b"\xff\xd8\xff" in frame[:64]]
    steps = sum(progress_nodes(result).values())
    assert len(jpegs) >= steps // 2, (len(jpegs), steps)  # a preview with (nearly) every progress step

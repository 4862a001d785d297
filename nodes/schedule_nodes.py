"""Scheduling in ComfyUI: the devices a run may use (MMPL Multi-GPU Scheduler), and `run_scheduled`, which every
sampling node runs its work through: the core's task graph, cost model and dispatch policies
(`mmpl_core.schedule.run_plan`) over worker threads, one per device, each with its own model replica.

Macro Chain plans through it (and with "populate while planning", populates each segment on a free device as soon as
its plan exists); Content Populator populates what is left. Results are bit-identical to sequential running for any
device count, mode and policy.
"""
from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io

from mmpl_core.plan import CFG_BRANCHES, Plan
from mmpl_core.plan_store import PlanStore
from mmpl_core.populate import plan_identity
from mmpl_core.schedule import POLICIES, Engine, run_plan
from mmpl_core.schedule.graph import MODES, POPULATE, build_graph
from mmpl_core.schedule.thread_pool import ThreadPool

from .comfy_adapters import INTERRUPT, NodeProgress, device_replica
from .keyframe_ui import SegmentProgress
from .types import CATEGORY, DeviceSet, MMPLDevices

AUTO_POLICY = "auto (chosen by simulation)"


def cache_store(plan: Plan) -> PlanStore:
    """Where a node keeps the work it finished on `plan` (output/mmpl/cache/<id>), so an interrupted run resumes."""
    return PlanStore(os.path.join(folder_paths.get_output_directory(), "mmpl", "cache", plan_identity(plan)))


class MMPLMultiGPUScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_MultiGPUScheduler",
            display_name="MMPL Multi-GPU Scheduler",
            category=CATEGORY,
            description="The devices MMPL runs on, one model replica each, and how it schedules them (the paper's "
                        "adaptive workload scheduling). Connect it to Macro Chain with 'populate while planning' so "
                        "that each segment is populated on a free device as soon as its plan exists, while the plan "
                        "chain moves on; or to Content Populator to populate a reviewed plan in parallel. Results "
                        "are identical to running on one device.",
            inputs=[
                io.String.Input("devices", default="cuda:0,cuda:1", tooltip="Comma-separated torch devices. CPU "
                                "devices (e.g. 'cpu,cpu' to try it out) run one torch thread each."),
                io.Int.Input("max_parallel", default=0, min=0, max=64, tooltip="0 = one worker per device."),
                io.Combo.Input("mode", options=list(MODES), default="throughput",
                               tooltip="For new plans. throughput: each segment keeps all its frames (81 for Wan). "
                                       "memory: segments stop at their midpoint keyframes (49 frames), never run the "
                                       "deepest-context group and need less than half the KV cache."),
                io.Combo.Input("cfg_branches", options=list(CFG_BRANCHES), default=CFG_BRANCHES[0],
                               tooltip="For new plans. batched: both guidance branches in one pass (fastest on 1-2 "
                                       "devices). split-plan / split: plan (or every) chunks run the branches apart, "
                                       "so two devices can share them and the plan chain gets shorter (from 3-4 "
                                       "devices on). Changes the last bits, so it is part of the plan."),
                io.Combo.Input("policy", options=[AUTO_POLICY, *POLICIES], default=AUTO_POLICY,
                               tooltip="Dispatch policy; auto simulates them all with the cost model and runs the "
                                       "fastest."),
            ],
            outputs=[MMPLDevices.Output(display_name="devices")],
        )

    @classmethod
    def execute(cls, devices, max_parallel, mode, cfg_branches, policy) -> io.NodeOutput:
        names = tuple(d.strip() for d in devices.split(",") if d.strip())
        if not names:
            raise ValueError("devices: give at least one device, e.g. 'cuda:0,cuda:1'")
        for name in names:
            try:
                device = torch.device(name)
            except RuntimeError as err:
                raise ValueError(f"devices: {name!r} is not a torch device ({err})") from None
            if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
                raise ValueError(f"devices: {name} is not available on this machine")
        repeated = sorted({n for n in names if names.count(n) > 1 and torch.device(n).type != "cpu"})
        if repeated:
            raise ValueError(f"devices: {', '.join(repeated)} listed more than once; give each GPU once (its workers "
                             "would share one model and race on it)")
        return io.NodeOutput(DeviceSet(names, max_parallel or len(names), mode, cfg_branches,
                                       None if policy == AUTO_POLICY else policy))


def worker_engines(model, pipeline, devices: DeviceSet | None) -> tuple[list[Engine], list[str]]:
    """One engine per worker: the node's own pipeline first, then pipelines over a replica of the model on each
    other device (workers on one device share its module tree, which they only read)."""
    if devices is None:
        return [Engine(pipeline)], [str(pipeline.device)]
    names = list(devices.devices[: devices.max_parallel])
    modules = {str(pipeline.device): pipeline.model}
    engines = []
    for i, name in enumerate(names):
        key = str(torch.device(name))
        if key not in modules:
            modules[key] = device_replica(model, pipeline, torch.device(name))
        engines.append(Engine(pipeline if i == 0 and key == str(pipeline.device) else pipeline.on(modules[key], key)))
    return engines, names


def plan_steps(plan: Plan, segments=(), replan: bool = True) -> int:
    """Denoising steps the task graph of `plan` holds (a progress bar's total)."""
    graph = build_graph(plan, decode=False, segments=list(segments), replan=replan)
    return sum(graph.denoising_steps(plan.settings.sampler.steps).values())


def run_scheduled(model, pipeline, plan: Plan, devices: DeviceSet | None, node_id, *, populate=(), store=None,
                  shown=(), replan: bool = True):
    """Plan what `plan` still needs and populate `populate` (segment indices) on the devices; returns the plan and
    a summary of the run (`schedule_summary`). replan False: populate only, the plan as it is (Content Populator).

    Each finished plan or populate task is saved to `store` (a PlanStore) at once, so a cancel or a failure keeps
    it; the strips' live status shows the segments in `shown` (planned → populating on … → done); a device that
    fails has its task retried on another, and the error that surfaces names the device and the segment. Cancel
    stops every device at its next step.
    """
    engines, names = worker_engines(model, pipeline, devices)
    progress = NodeProgress(plan_steps(plan, populate, replan), node_id, pipeline)
    status = SegmentProgress(plan, node_id)
    finished = {k for k in shown if plan.status(k) == "populated"}
    for k in shown:
        status.send(k, "done" if k in finished else "planned")

    populating = set()

    def started(task, workers):  # a segment's head and tail are two tasks: one "populating" per segment
        if task.kind == POPULATE and task.segment in shown and task.segment not in populating:
            populating.add(task.segment)
            status.send(task.segment, "populating", ", ".join(names[w] for w in workers))

    def saved(k, current):
        if store is not None:
            store.save(current)
        if k in shown and current.status(k) == "populated":
            finished.add(k)
            status.send(k, "done")

    # CPU workers (tests, CPU-only machines) each run one torch thread: the thread count changes CPU float rounding,
    # and one per worker keeps every device count bit-identical and the cores from being oversubscribed.
    cpu = devices is not None and any(torch.device(n).type == "cpu" for n in names)
    pool = ThreadPool(engines, names, on_step=progress.step, thread_context=torch.inference_mode, fatal=(INTERRUPT,),
                      torch_threads=1 if cpu else None)
    try:
        result = run_plan(plan, pool, pipeline.prompt_fn(plan.settings.sampler), decode=False, segments=list(populate),
                          replan=replan, policy=devices.policy if devices is not None else None, on_segment=saved,
                          on_start=started)
        progress.finish()
    finally:
        pool.close()
        pipeline.on_denoised = None
        for k in sorted(set(shown) - finished):  # cancelled or failed: back to planned
            status.send(k, "planned")
    return result.plan, schedule_summary(result, names)


def schedule_summary(result, names) -> dict:
    """What a run did, for the node's UI and the benchmark: devices, policy, tasks, the real makespan, and the core
    simulator's makespan for the same graph with the task times this run measured."""
    return {"devices": list(names), "policy": result.report.policy, "tasks": len(result.report.records),
            "makespan": round(result.report.makespan, 3), "simulated": round(result.simulated_makespan(), 3),
            "retries": list(result.report.retries)}

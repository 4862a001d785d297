"""Adaptive workload scheduling: the long video as a task graph, a cost model and simulator, and executors
(in-process, threads in the caller's process, local worker processes, Ray) that run it. See graph.py for the tasks
and policy.py for the rule."""
from .costs import CostModel
from .graph import MODES, Task, TaskGraph, build_graph
from .jobs import Engine, EngineSpec, Job, JobResult
from .policy import POLICIES, Dispatcher
from .pools import InProcessPool, ProcessPool
from .runner import RunReport, RunResult, ScheduleError, run_plan
from .simulate import Schedule, best_policy, critical_path, lower_bound, simulate, start_aware_bound, total_work
from .thread_pool import ThreadPool

__all__ = [
    "CostModel", "MODES", "Task", "TaskGraph", "build_graph", "Engine", "EngineSpec", "Job", "JobResult", "POLICIES",
    "Dispatcher", "InProcessPool", "ProcessPool", "RunReport", "RunResult", "ScheduleError", "run_plan", "Schedule",
    "best_policy", "critical_path", "lower_bound", "simulate", "start_aware_bound", "total_work", "ThreadPool",
]

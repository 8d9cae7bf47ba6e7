"""The sampler a run uses: the backbone folder's own scheduler, or a flow-matching one picked by name.

Like ComfyUI's sampler choice, this changes how the same model is integrated, not the model. Released SANA folders,
and the built-in tiny one that mirrors them, ship a second-order flow DPM-Solver with shift 3; either sampler can
run any folder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from .errors import MetaCanvasError
from .limits import SHIFT

DEFAULT_SAMPLER = "backbone default"
SAMPLERS = (DEFAULT_SAMPLER, "euler", "dpmpp_2m")
DEFAULT_SHIFT = SHIFT.default  # released SANA's flow shift


def make_scheduler(folder_scheduler, sampler: str = DEFAULT_SAMPLER, shift: float = DEFAULT_SHIFT):
    """A fresh scheduler for one run (schedulers keep per-run state). `shift` (limits.SHIFT) moves steps towards
    high noise as sigma' = shift * sigma / (1 + (shift - 1) * sigma); the backbone default keeps the folder's own."""
    shift = SHIFT.check(shift)  # checked even where ignored: a NaN in a saved graph is a mistake either way
    if sampler == DEFAULT_SAMPLER:
        return copy.deepcopy(folder_scheduler)
    if sampler not in SAMPLERS:
        raise MetaCanvasError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    timesteps = folder_scheduler.config.get("num_train_timesteps", 1000)
    if sampler == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: PLC0415 (CLI start-up)

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=timesteps, shift=shift)
    return flow_dpm_solver(shift, timesteps)


def flow_dpm_solver(shift: float = DEFAULT_SHIFT, num_train_timesteps: int = 1000):
    """Flow DPM-Solver++ 2M as released SANA folders configure it (their scheduler_config.json)."""
    from diffusers import DPMSolverMultistepScheduler  # noqa: PLC0415 (CLI start-up)

    return DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=shift, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        final_sigmas_type="zero",
    )


def prepared(scheduler, steps: int, set_timesteps: Callable | None = None):
    """A copy of `scheduler` (schedulers keep per-run state) set to `steps` steps and to start at the first.

    DPM-Solver rounds its timesteps to integers, so beyond 500 steps of 1000 the first ones repeat (999, 999, ...).
    Left to find its start by value, diffusers takes the *second* 999 (its rule for img2img schedules that begin
    mid-way), skips one step and indexes one sigma past the end on the last one (IndexError after all the work).
    A run from noise always starts at index 0: say so, for every scheduler that can be told.
    `set_timesteps(scheduler)` sets the steps where a backbone schedules its own way (e.g. FLUX's shifted sigmas)."""
    scheduler = copy.deepcopy(scheduler)
    if set_timesteps is None:
        scheduler.set_timesteps(steps)
    else:
        set_timesteps(scheduler)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    return scheduler


def scheduler_name(scheduler) -> str:
    """e.g. "DPMSolverMultistep, shift 3": how a run was sampled, for result files and tables."""
    shift = scheduler.config.get("flow_shift", scheduler.config.get("shift"))
    name = type(scheduler).__name__.removesuffix("Scheduler")
    return name if shift is None else f"{name}, shift {shift:g}"

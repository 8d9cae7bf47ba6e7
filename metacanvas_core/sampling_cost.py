"""What MetaCanvas costs at sampling time: the plain backbone vs the same with the canvas injected, in one run, for
any task (its inputs, e.g. Kontext's source image, go to both); optionally other MetaCanvas weights for the same
backbone (e.g. a 1-keyframe canvas against the 3-keyframe one) timed in the same rounds."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoints import MetaCanvasWeights
from .errors import MetaCanvasError
from .pipeline import MetaCanvasPipeline
from .plan import CanvasPlan, make_plan
from .sampling import InjectedBackbone, sample
from .task_inputs import TaskInputs


def _count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _check_repeats(repeats: int) -> None:
    if repeats < 1:
        raise MetaCanvasError(f"--repeats must be at least 1 (timed runs of each), got {repeats}")


def bench(
    pipe: MetaCanvasPipeline, prompt: str, inputs: TaskInputs, *, steps: int, cfg: float, repeats: int = 5,
    compare: dict[str, MetaCanvasWeights] | None = None,
) -> dict:
    """Median wall time of the same sampling run (an image or a clip, with the task's `inputs`) with and without the
    canvas (same plan, seed, steps, CFG), and with each of the `compare` weights (name -> weights for the same
    backbone).

    Runs alternate so that machine noise hits all alike, after one untimed round that pays the one-off costs
    (allocator, kernel and scheduler set-up) which would otherwise land on whichever runs first. The planner and
    part (a) of the canvas connector run once per generation; their time is reported on its own, and includes
    seeing the task's images or clip (whose VAE encoding `inputs` already holds).
    """
    _check_repeats(repeats)
    visuals = inputs.seen_by(1, "bench inputs")
    t0 = time.perf_counter()
    positive = pipe.plan([prompt], visuals=visuals)
    planner_s = time.perf_counter() - t0
    conditioning, width, height, frames = inputs.conditioning, inputs.width, inputs.height, inputs.frames
    model = pipe.model
    bb = model.backbone
    negative = pipe.plan([""])
    # Same DiT weights, strength 0: no canvas hook at all, so the difference is the canvas alone.
    runs: dict[str, tuple[InjectedBackbone, CanvasPlan, CanvasPlan]] = {
        "plain": (InjectedBackbone(bb, model.connector, 0.0), positive, negative),
        "metacanvas": (model, positive, negative),
    }
    for name, loaded in (compare or {}).items():
        other = InjectedBackbone(bb).inject(loaded.on(bb.device, bb.dtype), model.strength)
        runs[name] = (other, make_plan(pipe.planner, loaded, [prompt], visuals=visuals),
                      make_plan(pipe.planner, loaded, [""]))
    kw = dict(width=width, height=height, frames=frames, steps=steps, cfg=cfg, seed=0, conditioning=conditioning)
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, (m, pos, neg) in runs.items():
            t0 = time.perf_counter()
            sample(m, pos, neg, **kw)
            if round_:  # round 0 is the warm-up
                timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}

    grid = bb.token_grid(width, height, frames)
    x = torch.zeros(bb.latent_shape(1, width, height, frames), device=bb.device, dtype=bb.dtype)
    t = torch.full((1,), 500.0, device=bb.device)

    def step_flops(name: str) -> int:
        m, plan, _ = runs[name]
        text, mask = plan.text.to(bb.device, bb.dtype), plan.text_mask.to(bb.device)
        with torch.no_grad(), m.applied(plan, grid):
            return _count_flops(lambda: bb.predict(x, t, text, mask, conditioning))

    dit_flops, mc_flops = step_flops("plain"), step_flops("metacanvas")
    conn = model.connector.connector
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    result = {
        "width": width, "height": height, "frames": frames, "steps": steps, "cfg": cfg, "repeats": repeats,
        "threads": torch.get_num_threads(),
        "keyframes": conn.config.grid.frames,
        "plain_sampling_s": round(med["plain"], 4),
        "metacanvas_sampling_s": round(med["metacanvas"], 4),
        "ratio": round(med["metacanvas"] / med["plain"], 3),
        "planner_once_s": round(planner_s, 4),
        "connector_params": {
            "canvas_tokens": conn.canvas_tokens.numel(),
            "text_connector": count(conn.text_connector),
            "canvas_encoder_once": count(conn.canvas_encoder),
            "canvas_fuser_per_step": count(conn.canvas_fuser),
        },
        "dit_params": count(bb.transformer),
        "dit_flops_per_step": dit_flops,
        "connector_flops_per_step": mc_flops - dit_flops,
        "connector_flops_share": round((mc_flops - dit_flops) / dit_flops, 4),
    }
    if compare:
        # Sampling time against the main weights' (e.g. 1 keyframe vs 3: the canvas's cost per step).
        result["compare"] = {
            name: {
                "keyframes": loaded.connector.config.grid.frames,
                "sampling_s": round(med[name], 4),
                "metacanvas_vs_this": round(med["metacanvas"] / med[name], 3),
                "connector_flops_per_step": step_flops(name) - dit_flops,
            }
            for name, loaded in compare.items()
        }
    return result

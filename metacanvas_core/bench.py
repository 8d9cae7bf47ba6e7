"""Side-by-side cost of MetaCanvas: sampling with the plain backbone vs with the canvas injected, in one run
(text-to-image, and editing: plain Kontext sampling vs Kontext with the canvas)."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .backbones.base import Conditioning
from .errors import MetaCanvasError
from .pipeline import MetaCanvasPipeline
from .sampling import InjectedBackbone, sample


def _count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_t2i(
    pipe: MetaCanvasPipeline, prompt: str, *, width: int, height: int, steps: int, cfg: float, repeats: int = 5
) -> dict:
    """Median wall time of the same sampling run with and without the canvas (same plan, seed, steps, CFG).

    Runs alternate so that machine noise hits both alike, after one untimed pair that pays the one-off costs
    (allocator, kernel and scheduler set-up) which would otherwise land on whichever runs first. The planner and
    part (a) of the canvas connector run once per generation; their time is reported on its own.
    """
    if repeats < 1:
        raise MetaCanvasError(f"--repeats must be at least 1 (timed runs of each), got {repeats}")
    t0 = time.perf_counter()
    positive = pipe.plan([prompt])
    planner_s = time.perf_counter() - t0
    return _bench(pipe, positive, pipe.plan([""]), planner_s, None, width, height, steps, cfg, repeats)


def bench_edit(
    pipe: MetaCanvasPipeline, prompt: str, source: torch.Tensor, *, width: int, height: int, steps: int, cfg: float,
    repeats: int = 5,
) -> dict:
    """`bench_t2i` for an edit: plain Kontext sampling (the source image as reference) vs the same with the canvas.
    The planner's time includes seeing the source image; the reference's VAE encoding is done once, outside."""
    from .editing import source_conditioning, source_visuals

    if repeats < 1:
        raise MetaCanvasError(f"--repeats must be at least 1 (timed runs of each), got {repeats}")
    conditioning = source_conditioning(pipe.model.backbone, source, width, height, "--image")
    t0 = time.perf_counter()
    positive = pipe.plan([prompt], visuals=source_visuals(source, 1, "--image"))
    planner_s = time.perf_counter() - t0
    result = _bench(pipe, positive, pipe.plan([""]), planner_s, conditioning, width, height, steps, cfg, repeats)
    return {"task": "edit", **result}


def _bench(pipe: MetaCanvasPipeline, positive, negative, planner_s: float, conditioning: Conditioning | None,
           width: int, height: int, steps: int, cfg: float, repeats: int) -> dict:
    model = pipe.model
    # Same DiT weights, strength 0: no canvas hook at all, so the difference is the canvas alone.
    plain = InjectedBackbone(model.backbone, model.connector, 0.0)
    kw = dict(width=width, height=height, steps=steps, cfg=cfg, seed=0, conditioning=conditioning)
    timings: dict[str, list[float]] = {"plain": [], "metacanvas": []}
    for round_ in range(repeats + 1):
        for name, m in (("plain", plain), ("metacanvas", model)):
            t0 = time.perf_counter()
            sample(m, positive, negative, **kw)
            if round_:  # round 0 is the warm-up
                timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}

    bb = model.backbone
    grid = bb.token_grid(width, height)
    x = torch.zeros(bb.latent_shape(1, width, height))
    t = torch.full((1,), 500.0)
    extra = () if conditioning is None else (conditioning,)
    def step_flops(m: InjectedBackbone) -> int:
        with torch.no_grad(), m.applied(positive, grid):
            return _count_flops(lambda: bb.predict(x, t, positive.text, positive.text_mask, *extra))

    dit_flops, mc_flops = step_flops(plain), step_flops(model)
    conn = model.connector.connector
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {
        "width": width, "height": height, "steps": steps, "cfg": cfg, "repeats": repeats,
        "threads": torch.get_num_threads(),
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

"""Running a task's benchmark (`benchmarks.py`; its definition in `tasks.py` names it): every held-out scene of it
sampled for each seed, with the same prompts, inputs and noise for every method, then scored; or the true renders
through the backbone's VAE, the ceiling that VAE leaves."""

from __future__ import annotations

import time

import numpy as np
import torch

from . import tasks
from .backbones.base import BackboneAdapter
from .pipeline import GenerationResult, MetaCanvasPipeline
from .sampling import latents_to_images
from .schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, make_scheduler, scheduler_name


def evaluate(
    pipe: MetaCanvasPipeline,
    task: str = "t2i",
    n: int = 200,
    seeds: tuple[int, ...] = (0,),
    steps: int = 20,
    cfg: float = 3.0,
    canvas_only: bool = False,
    batch: int | None = None,
    split: str = "heldout",
    sampler: str = DEFAULT_SAMPLER,
    shift: float = DEFAULT_SHIFT,
) -> dict:
    """Scores over `n` held-out prompts of `task`'s benchmark (`split="train"`: seen combinations) for each seed,
    and their mean and spread.

    Sample i of seed s starts from noise seeded with s * 1_000_003 + i, for every method alike. `canvas_only`
    gives the DiT an empty text conditioning; only the canvas carries the prompt.
    """
    bench = tasks.task(task).benchmark
    scenes = bench.scenes(n, split)
    batch = batch or bench.batch
    scheduler = make_scheduler(pipe.model.backbone.scheduler, sampler, shift)  # fails early on a bad name
    t0 = time.time()
    runs = []
    for s in seeds:
        outputs = []
        for i in range(0, n, batch):
            chunk = scenes[i : i + batch]
            result: GenerationResult = pipe(
                [bench.prompt(c) for c in chunk], width=bench.width, height=bench.height, frames=bench.frames,
                steps=steps, cfg=cfg, seed=[s * 1_000_003 + i + j for j in range(len(chunk))],
                text_prompt=[""] * len(chunk) if canvas_only else None, sampler=sampler, shift=shift,
                task=task, given=bench.given(chunk),
            )
            outputs.extend(bench.outputs(result.images))
        runs.append(outputs)
    return {"n": n, "seeds": list(seeds), "steps": steps, "cfg": cfg, "strength": pipe.model.strength,
            "scheduler": scheduler_name(scheduler), "canvas_only": canvas_only, "split": split,
            **bench.score(scenes, runs), "seconds": round(time.time() - t0, 1)}


def evaluate_vae_round_trip(
    backbone: BackboneAdapter, task: str = "t2i", n: int = 200, seeds: tuple[int, ...] = (0,),
    split: str = "heldout", batch: int | None = None,
) -> dict:
    """The ceiling the backbone's VAE leaves: the benchmark scenes rendered (jittered with each seed), encoded,
    decoded and scored like generated samples, `batch` at a time (default: images all at once)."""
    bench = tasks.task(task).benchmark
    scenes = bench.scenes(n, split)
    batch = batch or (n if bench.frames == 1 else bench.batch)
    t0 = time.time()
    runs = []
    for s in seeds:
        rng = np.random.default_rng(s)
        outputs = []
        for i in range(0, n, batch):
            truth = bench.truth(scenes[i : i + batch], rng)
            with torch.no_grad():
                latents = backbone.encode(torch.from_numpy(truth).to(backbone.device))
            outputs.extend(bench.outputs(latents_to_images(backbone, latents)))
        runs.append(outputs)
    return {"n": n, "seeds": list(seeds), "text": "-", "canvas_only": False, "split": split,
            **bench.score(scenes, runs), "seconds": round(time.time() - t0, 1)}

"""The shapes-world text-to-image benchmark: held-out prompts, fixed seeds, GenEval-style scores per category."""

from __future__ import annotations

import time

import numpy as np
import torch

from .backbones.base import BackboneAdapter
from .pipeline import MetaCanvasPipeline
from .sampling import latents_to_images
from .schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, make_scheduler, scheduler_name
from .world.scorer import detect, failure_shares, layout_score, position_score, score_detections
from .world.shapes import Scene, benchmark_prompts, model_pixels, render
from .world.tiny_models import IMAGE_SIZE


def evaluate_t2i(
    pipe: MetaCanvasPipeline,
    n: int = 200,
    seeds: tuple[int, ...] = (0,),
    steps: int = 20,
    cfg: float = 3.0,
    canvas_only: bool = False,
    batch: int = 50,
    split: str = "heldout",
    sampler: str = DEFAULT_SAMPLER,
    shift: float = DEFAULT_SHIFT,
) -> dict:
    """Scores over `n` held-out prompts (`split="train"`: seen combinations) for each seed, and their mean and
    spread.

    Image i of seed s starts from noise seeded with s * 1_000_003 + i, for every method alike. `canvas_only`
    gives the DiT an empty text conditioning; only the canvas carries the prompt.
    """
    scenes = benchmark_prompts(n, split=split)
    scheduler = make_scheduler(pipe.model.backbone.scheduler, sampler, shift)  # fails early on a bad name
    t0 = time.time()
    runs = []
    for s in seeds:
        images = []
        for i in range(0, n, batch):
            chunk = scenes[i : i + batch]
            result = pipe(
                [c.caption for c in chunk], width=IMAGE_SIZE, height=IMAGE_SIZE, steps=steps, cfg=cfg,
                seed=[s * 1_000_003 + i + j for j in range(len(chunk))],
                text_prompt=[""] * len(chunk) if canvas_only else None, sampler=sampler, shift=shift,
            )
            images.extend(result.images.numpy())
        runs.append(images)
    return {"n": n, "seeds": list(seeds), "steps": steps, "cfg": cfg, "strength": pipe.model.strength,
            "scheduler": scheduler_name(scheduler), "canvas_only": canvas_only, "split": split,
            **score_runs(scenes, runs), "seconds": round(time.time() - t0, 1)}


def evaluate_vae_round_trip(
    backbone: BackboneAdapter, n: int = 200, seeds: tuple[int, ...] = (0,), split: str = "heldout"
) -> dict:
    """The ceiling the backbone's VAE leaves: the benchmark scenes rendered (jittered with each seed), encoded,
    decoded and scored like generated images."""
    scenes = benchmark_prompts(n, split=split)
    t0 = time.time()
    runs = []
    for s in seeds:
        rng = np.random.default_rng(s)
        truth = model_pixels(np.stack([render(c.objects, IMAGE_SIZE, rng) for c in scenes]))
        with torch.no_grad():
            latents = backbone.encode(torch.from_numpy(truth).to(backbone.device))
        runs.append(list(latents_to_images(backbone, latents).numpy()))
    return {"n": n, "seeds": list(seeds), "text": "-", "canvas_only": False, "split": split, **score_runs(scenes, runs),
            "seconds": round(time.time() - t0, 1)}


def score_runs(scenes: list[Scene], runs: list[list[np.ndarray]]) -> dict:
    """Per-category scores of one list of images per seed: the mean over seeds, its standard error, the per-seed
    scores, the object position score and why the failing images fail."""
    found = [[detect(image) for image in images] for images in runs]  # detect once, summarise four ways
    per_seed = [score_detections(scenes, f) for f in found]
    failures = [failure_shares(scenes, f) for f in found]
    layouts = [layout_score(scenes, f) for f in found]
    mean = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
    # Standard error of a pass rate over all samples of a category (n/6 prompts x seeds).
    per_cat = max(1, len(scenes) // 6) * len(runs)
    var = {k: v * (1 - v) / per_cat for k, v in mean.items() if k != "overall"}
    stderr = {k: float(np.sqrt(v)) for k, v in var.items()}
    stderr["overall"] = float(np.sqrt(sum(var.values())) / len(var))
    return {
        "scores": mean, "stderr": stderr, "per_seed": per_seed,
        "object_position_score": float(np.mean([position_score(scenes, f) for f in found])),
        "layout_score": None if layouts[0] is None else float(np.mean(layouts)),
        # Why the failing images fail, per category (shares of its prompts, mean over seeds).
        "failures": {c: {k: float(np.mean([f[c][k] for f in failures])) for k in failures[0][c]} for c in failures[0]},
    }


def _text_column(result: dict) -> str:
    """What the DiT's text conditioning was: the prompt, empty (canvas alone), or "-" where no DiT ran."""
    return result.get("text") or ("empty" if result["canvas_only"] else "prompt")


_SAMPLER_FIELDS = ("steps", "cfg", "strength", "scheduler")
# What results written before a field was recorded were sampled with, where that was fixed (no scheduler here: it
# came from the backbone folder).
_OLD_DEFAULTS = {"strength": 1.0}


def _method_cell(result: dict, varying: set[str]) -> str:
    notes = ["training combinations"] if result.get("split") == "train" else []
    if varying and "steps" in result:
        notes.append(f"{result['steps']} steps, CFG {result['cfg']:g}")
        strength = result.get("strength", _OLD_DEFAULTS["strength"])
        notes += [f"strength {strength:g}"] if strength != _OLD_DEFAULTS["strength"] else []
        notes += [result["scheduler"]] if "scheduler" in varying and "scheduler" in result else []
    return result["method"] + (f" ({'; '.join(notes)})" if notes else "")


def _sampler_varies(results: list[dict]) -> set[str]:
    """The sampler settings that differ between rows, which then say how each was sampled; a table of one setting
    stays uncluttered. Results written before a field was recorded count as its old default, or are left out of
    that field's comparison where there was none."""
    known = [{**_OLD_DEFAULTS, **r} for r in results if "steps" in r]
    return {f for f in _SAMPLER_FIELDS if len({r[f] for r in known if f in r}) > 1}


def _layout_cell(result: dict) -> str:
    layout = result.get("layout_score")  # absent from results written before it existed
    return "-" if layout is None else f"{100 * layout:.1f}"


def markdown_table(results: list[dict]) -> str:
    """One row per evaluation result: per-category scores (x100) with the overall standard error."""
    from .world.shapes import CATEGORIES

    head = "| method | text to DiT | " + " | ".join(CATEGORIES) + " | overall | object position | layout |"
    rows = [head, "|" + "---|" * (len(CATEGORIES) + 5)]
    varying = _sampler_varies(results)
    for r in results:
        s, e = r["scores"], r["stderr"]
        cells = " | ".join(f"{100 * s[c]:.1f}" for c in CATEGORIES)
        rows.append(f"| {_method_cell(r, varying)} | {_text_column(r)} | {cells} | **{100 * s['overall']:.1f}** "
                    f"± {100 * e['overall']:.1f} | {100 * r['object_position_score']:.1f} | {_layout_cell(r)} |")
    return "\n".join(rows)


def markdown_failures(results: list[dict]) -> str:
    """One row per evaluation result: per category, why its failing images fail (% of its prompts, largest first)."""
    from .world.shapes import CATEGORIES

    rows = ["| method | text to DiT | " + " | ".join(CATEGORIES) + " |", "|" + "---|" * (len(CATEGORIES) + 2)]
    varying = _sampler_varies(results)
    for r in results:
        cells = []
        for c in CATEGORIES:
            kinds = sorted(r["failures"][c].items(), key=lambda kv: -kv[1])
            cells.append(", ".join(f"{k} {100 * v:.0f}" for k, v in kinds if v > 0) or "-")
        rows.append(f"| {_method_cell(r, varying)} | {_text_column(r)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)

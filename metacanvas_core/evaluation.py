"""The shapes-world text-to-image benchmark: held-out prompts, fixed seeds, GenEval-style scores per category."""

from __future__ import annotations

import time

import numpy as np

from .pipeline import MetaCanvasPipeline
from .world.scorer import failure_shares, position_score, score_images
from .world.shapes import benchmark_prompts


def evaluate_t2i(
    pipe: MetaCanvasPipeline,
    n: int = 200,
    seeds: tuple[int, ...] = (0,),
    steps: int = 20,
    cfg: float = 3.0,
    canvas_only: bool = False,
    batch: int = 50,
) -> dict:
    """Scores over `n` held-out prompts for each seed, and their mean and spread.

    Image i of seed s starts from noise seeded with s * 1_000_003 + i, for every method alike. `canvas_only`
    gives the DiT an empty text conditioning; only the canvas carries the prompt.
    """
    scenes = benchmark_prompts(n)
    size = 32
    per_seed, pos_scores, failures = [], [], []
    t0 = time.time()
    for s in seeds:
        images = []
        for i in range(0, n, batch):
            chunk = scenes[i : i + batch]
            prompts = [c.caption for c in chunk]
            result = pipe(
                prompts, width=size, height=size, steps=steps, cfg=cfg,
                seed=[s * 1_000_003 + i + j for j in range(len(chunk))],
                text_prompt=[""] * len(chunk) if canvas_only else None,
            )
            images.extend(result.images.numpy())
        per_seed.append(score_images(scenes, images))
        pos_scores.append(position_score(scenes, images))
        failures.append(failure_shares(scenes, images))
    keys = per_seed[0].keys()
    mean = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
    # Standard error of a pass rate over all samples of a category (n/6 prompts x seeds).
    per_cat = max(1, n // 6) * len(seeds)
    var = {k: v * (1 - v) / per_cat for k, v in mean.items() if k != "overall"}
    stderr = {k: float(np.sqrt(v)) for k, v in var.items()}
    stderr["overall"] = float(np.sqrt(sum(var.values())) / len(var))
    return {
        "n": n, "seeds": list(seeds), "steps": steps, "cfg": cfg, "canvas_only": canvas_only,
        "scores": mean, "stderr": stderr, "per_seed": per_seed,
        "object_position_score": float(np.mean(pos_scores)), "seconds": round(time.time() - t0, 1),
        # Why the failing images fail, per category (shares of its prompts, mean over seeds).
        "failures": {c: {k: float(np.mean([f[c][k] for f in failures])) for k in failures[0][c]} for c in failures[0]},
    }


def markdown_table(results: list[dict]) -> str:
    """One row per evaluation result: per-category scores (x100) with the overall standard error."""
    from .world.shapes import CATEGORIES

    head = "| method | text to DiT | " + " | ".join(CATEGORIES) + " | overall | object position |"
    rows = [head, "|" + "---|" * (len(CATEGORIES) + 4)]
    for r in results:
        s, e = r["scores"], r["stderr"]
        cells = " | ".join(f"{100 * s[c]:.1f}" for c in CATEGORIES)
        text = "empty" if r["canvas_only"] else "prompt"
        rows.append(f"| {r['method']} | {text} | {cells} | **{100 * s['overall']:.1f}** ± {100 * e['overall']:.1f} "
                    f"| {100 * r['object_position_score']:.1f} |")
    return "\n".join(rows)


def markdown_failures(results: list[dict]) -> str:
    """One row per evaluation result: per category, why its failing images fail (% of its prompts, largest first)."""
    from .world.shapes import CATEGORIES

    rows = ["| method | text to DiT | " + " | ".join(CATEGORIES) + " |", "|" + "---|" * (len(CATEGORIES) + 2)]
    for r in results:
        cells = []
        for c in CATEGORIES:
            kinds = sorted(r["failures"][c].items(), key=lambda kv: -kv[1])
            cells.append(", ".join(f"{k} {100 * v:.0f}" for k, v in kinds if v > 0) or "-")
        rows.append(f"| {r['method']} | {'empty' if r['canvas_only'] else 'prompt'} | " + " | ".join(cells) + " |")
    return "\n".join(rows)

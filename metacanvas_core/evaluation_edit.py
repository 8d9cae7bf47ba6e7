"""The shapes-world editing benchmark: held-out edits of world/edits.py, fixed seeds, scores per edit kind.

Every method edits the same source images (unjittered renders) with the same instructions and noise seeds; the
edit scorer grades each result against its source (`edit_correct`, `preservation`, `overall`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .pipeline import MetaCanvasPipeline
from .schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, make_scheduler, scheduler_name
from .world.edit_scorer import score_edits
from .world.edits import EDIT_KINDS, edit_benchmark, render_pair
from .world.tiny_flux import EDIT_IMAGE_SIZE

SUMMARY = ("overall", "edit_correct", "preservation")


def evaluate_edit(
    pipe: MetaCanvasPipeline,
    n: int = 100,
    seeds: tuple[int, ...] = (0,),
    steps: int = 20,
    cfg: float = 3.0,
    batch: int = 25,
    split: str = "heldout",
    sampler: str = DEFAULT_SAMPLER,
    shift: float = DEFAULT_SHIFT,
    size: int = EDIT_IMAGE_SIZE,
) -> dict:
    """Scores over `n` benchmark edits (`split="train"`: seen combinations) for each seed, their mean and spread.

    Edit i of seed s starts from noise seeded with s * 1_000_003 + i, for every method alike."""
    edits = edit_benchmark(n, split=split)
    sources = [render_pair(e, size)[0] for e in edits]
    scheduler = make_scheduler(pipe.model.backbone.scheduler, sampler, shift)  # fails early on a bad name
    t0 = time.time()
    per_seed = []
    for s in seeds:
        images = []
        for i in range(0, n, batch):
            chunk = edits[i: i + batch]
            source = torch.from_numpy(np.stack(sources[i: i + len(chunk)])).float().div(255)
            result = pipe([e.instruction for e in chunk], source_image=source, width=size, height=size, steps=steps,
                          cfg=cfg, seed=[s * 1_000_003 + i + j for j in range(len(chunk))], sampler=sampler,
                          shift=shift)
            images.extend(result.images.numpy())
        per_seed.append(score_edits(edits, images, sources))
    return {"task": "edit", "n": n, "seeds": list(seeds), "steps": steps, "cfg": cfg,
            "strength": pipe.model.strength, "scheduler": scheduler_name(scheduler), "split": split,
            **summarise(per_seed, n), "seconds": round(time.time() - t0, 1)}


def summarise(per_seed: list[dict], n: int) -> dict:
    """Means over seeds of `score_edits` results, and a standard error per summary score: the binomial one of a
    0/1 score over every graded image (an upper bound for preservation and overall, which lie in [0, 1])."""
    kinds = [k for k in EDIT_KINDS if k in per_seed[0]["per_kind"]]
    scores = {k: float(np.mean([r[k] for r in per_seed])) for k in SUMMARY}
    scores["per_kind"] = {
        kind: {k: float(np.mean([r["per_kind"][kind][k] for r in per_seed])) for k in SUMMARY} for kind in kinds
    }
    graded = n * len(per_seed)
    stderr = {k: float(np.sqrt(v * (1 - v) / graded)) for k, v in scores.items() if k in SUMMARY}
    return {"scores": scores, "stderr": stderr, "per_seed": per_seed}


def markdown_edit_table(results: list[dict]) -> str:
    """One row per edit evaluation: overall (± its standard error), edit_correct and preservation, then
    edit_correct / preservation per edit kind (x100)."""
    kinds = [k for k in EDIT_KINDS if any(k in r["scores"]["per_kind"] for r in results)]
    head = "| method | overall | edit correct | preservation | " + " | ".join(kinds) + " |"
    rows = [head, "|" + "---|" * (len(kinds) + 4)]
    for r in results:
        s, e = r["scores"], r["stderr"]
        per = r["scores"]["per_kind"]
        cells = " | ".join(f"{100 * per[k]['edit_correct']:.0f} / {100 * per[k]['preservation']:.0f}"
                           if k in per else "-" for k in kinds)
        notes = "; ".join(x for x in (
            "training combinations" if r.get("split") == "train" else "",
            f"{r['steps']} steps, CFG {r['cfg']:g}" if "steps" in r else "",
        ) if x)
        rows.append(f"| {r['method']} ({notes}) | **{100 * s['overall']:.1f}** ± {100 * e['overall']:.1f} | "
                    f"{100 * s['edit_correct']:.1f} ± {100 * e['edit_correct']:.1f} | "
                    f"{100 * s['preservation']:.1f} | {cells} |")
    return "\n".join(rows) + "\n\n(per edit kind: edit correct / preservation, x100)"

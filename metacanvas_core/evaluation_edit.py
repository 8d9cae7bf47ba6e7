"""The shapes-world editing benchmark: held-out edits of world/edits.py, fixed seeds, scores per edit kind.

Every method edits the same source images (unjittered renders) with the same instructions and noise seeds (the
`edit` definition of `evaluation.BENCHMARKS`, run by the one `evaluate`); the edit scorer grades each result
against its source (`edit_correct`, `preservation`, `overall`).
"""

from __future__ import annotations

import numpy as np
import torch

from .world.edit_scorer import score_edits
from .world.edits import EDIT_KINDS, Edit, render_pair
from .world.tiny_flux import EDIT_IMAGE_SIZE

SUMMARY = ("overall", "edit_correct", "preservation")


def source_images(edits: list[Edit], size: int = EDIT_IMAGE_SIZE) -> torch.Tensor:
    """The edits' source images (unjittered renders), (B, size, size, 3) in [0, 1]: what every method edits."""
    return torch.from_numpy(np.stack([render_pair(e, size)[0] for e in edits])).float().div(255)


def score_edit_runs(edits: list[Edit], runs: list[list[np.ndarray]], size: int = EDIT_IMAGE_SIZE) -> dict:
    """Edit scores of one list of outputs per seed, each graded against its source (`summarise`)."""
    sources = [render_pair(e, size)[0] for e in edits]
    return summarise([score_edits(edits, outputs, sources) for outputs in runs], len(edits))


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

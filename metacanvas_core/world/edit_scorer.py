"""Grading shapes-world edits with the shapes scorer's detector.

Per edit: `edit_correct` (1 or 0): what is drawn in the edited cells is exactly what the target has there: the
right object in the right new colour, shape or cell, an emptied cell empty, nothing else. `preservation` (0..1): 0
if any object outside the edited cells is missing, changed or new; otherwise the share of pixels outside the edited
cells that kept their colour (within `PIXEL_TOLERANCE` per channel) from the source image. `overall` = edit_correct
x preservation: the edit was made and nothing else moved. Summaries are means per edit kind, and over kinds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .edits import EDIT_KINDS, Edit
from .scorer import Detection, detect, to_uint8

PIXEL_TOLERANCE = 48  # per-channel difference still counted as the same colour (VAE round trips blur edges)


def cell_mask(cells: frozenset[int] | set[int], size: int) -> np.ndarray:
    """(size, size) bool: the pixels of `cells` on the 3x3 grid (pixel centres assigned as detections are)."""
    centres = (np.arange(size) + 0.5) * 3 / size
    band = np.minimum(centres.astype(int), 2)
    cell = band[:, None] * 3 + band[None, :]
    return np.isin(cell, list(cells))


def _objects(dets: list[Detection], cells, inside: bool) -> Counter:
    return Counter((d.colour, d.shape, d.cell) for d in dets if (d.cell in cells) == inside)


def grade_edit(edit: Edit, output: np.ndarray, source: np.ndarray, dets: list[Detection] | None = None) -> dict:
    """Scores of one edited image (H, W, 3; uint8, or float in [0, 1]) against its source image."""
    out, src = to_uint8(np.asarray(output)), to_uint8(np.asarray(source))
    if out.shape != src.shape:
        raise ValueError(f"output {out.shape} and source {src.shape} images differ in size")
    dets = detect(out) if dets is None else dets
    cells = edit.edited_cells
    want = [(o.colour, o.shape, o.cell) for o in edit.target]
    correct = _objects(dets, cells, True) == Counter(w for w in want if w[2] in cells)
    kept = _objects(dets, cells, False) == Counter(w for w in want if w[2] not in cells)
    outside = ~cell_mask(cells, out.shape[0])
    same = (np.abs(out.astype(np.int16) - src.astype(np.int16)) <= PIXEL_TOLERANCE).all(-1)
    pixels = float(same[outside].mean()) if outside.any() else 1.0
    preservation = pixels if kept else 0.0
    return {
        "edit_correct": float(correct), "preservation": preservation, "overall": float(correct) * preservation,
        "objects_kept": float(kept), "pixel_similarity": pixels,
    }


def score_edits(edits: list[Edit], outputs, sources) -> dict:
    """`overall`, `edit_correct`, `preservation` (fractions: means over the edit kinds present, each the mean over
    its edits) and `per_kind` with the same per kind, plus `objects_kept`, `pixel_similarity` and `n`."""
    graded: dict[str, list[dict]] = {k: [] for k in EDIT_KINDS}
    for edit, out, src in zip(edits, outputs, sources, strict=True):
        graded[edit.kind].append(grade_edit(edit, out, src))
    per_kind = {}
    for kind, rows in graded.items():
        if rows:
            per_kind[kind] = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
            per_kind[kind]["n"] = len(rows)
    scores = {key: float(np.mean([v[key] for v in per_kind.values()]))
              for key in ("overall", "edit_correct", "preservation")}
    scores["per_kind"] = per_kind
    return scores

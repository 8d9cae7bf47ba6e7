"""Grading video edits and reference-to-video clips with the shapes detector, frame by frame.

Video edits mirror `edit_scorer` per frame. In frame f (time t = f / (F - 1)) every object of the target clip is
expected with its colour and shape at the cell(s) its centre is in at t (a mover's centre, `CELL_TOLERANCE` cells
either way, may sit on a cell border); the edited cells are where the edited object is at t, in the source clip and
in the target clip (every cell its pixels may reach).
- `edit_correct` (share of frames): the edit's result (the recoloured, reshaped or redirected mover, the added
  object) is found exactly once where it belongs at t, the object the instruction names is gone where the result
  differs from it (a removed object is found nowhere), and nothing unasked is drawn in the edited cells;
- `preservation` (mean over frames): 0 if any other object is missing, changed, doubled or out of place, or anything
  unasked is drawn outside the edited cells; otherwise the share of pixels outside the edited cells that kept their
  colour (within `PIXEL_TOLERANCE` per channel) from the source frame;
- `overall`: the mean over frames of edit_correct x preservation.
Reference-to-video: `reference_fidelity` (share of frames in which every referenced object is found with its colour
and shape), the clip scorer's keys for the motion asked (`motion_direction`, `start_cell`, `end_cell`,
`still_objects`, `colour_constant`, `shape_constant`) and `overall`, the mean of reference_fidelity and the clip
scorer's mean of its keys.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .clip_edits import CLIP_EDIT_KINDS, ClipEdit, ReferenceScene
from .clip_scorer import PASS_KEYS, grade_clip
from .clips import Motion
from .edit_scorer import PIXEL_TOLERANCE, cell_mask
from .scorer import Detection, detect, to_uint8
from .shapes import Obj

CELL_TOLERANCE = 0.3  # cells: how far a detected centroid may sit from the expected centre (triangles, jitter)
EDIT_KEYS: tuple[str, ...] = ("overall", "edit_correct", "preservation")


def _centre(o: Motion | Obj, t: float, size: int) -> tuple[float, float]:
    """(row, col) in cell units of the object's centre at t, as the clip renderer shifts movers (whole pixels)."""
    if isinstance(o, Obj):
        r, c = divmod(o.cell, 3)
        return r + 0.5, c + 0.5
    cell = size / 3
    (r0, c0), (dr, dc) = divmod(o.start, 3), o.step
    return r0 + 0.5 + round(t * dr * cell) / cell, c0 + 0.5 + round(t * dc * cell) / cell


def _cells_near(o: Motion | Obj, t: float, size: int, reach: float) -> frozenset[int]:
    """The cells that overlap the square of half-side `reach` (cells) around the object's centre at t."""
    r, c = _centre(o, t, size)
    rows = [k for k in range(3) if k < r + reach and k + 1 > r - reach]
    cols = [k for k in range(3) if k < c + reach and k + 1 > c - reach]
    return frozenset(a * 3 + b for a in rows for b in cols)


def allowed_cells(o: Motion | Obj, t: float, size: int) -> frozenset[int]:
    """The cells an object's detection may report at time t: those within CELL_TOLERANCE of its centre."""
    return _cells_near(o, t, size, CELL_TOLERANCE)


def drawn_cells(o: Motion | Obj, t: float, size: int) -> frozenset[int]:
    """The cells an object's pixels may reach at time t: its half-size (0.4 cells) and a pixel of jitter."""
    return _cells_near(o, t, size, 0.4 + 3 / size)


def _ident(o: Motion | Obj) -> tuple[str, str]:
    return o.colour, o.shape


def _grade_frame(edit: ClipEdit, dets: list[Detection], out: np.ndarray, src: np.ndarray, t: float) -> tuple:
    size = out.shape[0]
    edited_cells = set()
    for o in (edit.subject, edit.result):
        if o is not None:
            edited_cells |= drawn_cells(o, t, size)
    result, subject = edit.result, edit.subject
    kept = [o for o in (*edit.target.moving, *edit.target.still) if o is not result]
    known = {_ident(o) for o in kept} | {_ident(o) for o in (subject, result) if o is not None}
    extras = [d for d in dets if (d.colour, d.shape) not in known]
    # The edit: the result once, in place; the named object gone where it changed; nothing unasked where it acts.
    correct = not any(d.cell in edited_cells for d in extras)
    if result is not None:
        found = [d for d in dets if (d.colour, d.shape) == _ident(result)]
        correct &= len(found) == 1 and found[0].cell in allowed_cells(result, t, size)
    if subject is not None and (result is None or _ident(result) != _ident(subject)):
        correct &= not any((d.colour, d.shape) == _ident(subject) for d in dets)
    # Everything else: each kept object once, in place; nothing unasked elsewhere; pixels as in the source.
    counts = Counter((d.colour, d.shape) for d in dets)
    ok = not any(d.cell not in edited_cells for d in extras)
    for o in kept:
        found = [d for d in dets if (d.colour, d.shape) == _ident(o)]
        ok &= counts[_ident(o)] == 1 and found[0].cell in allowed_cells(o, t, size)
    outside = ~cell_mask(edited_cells, size)
    same = (np.abs(out.astype(np.int16) - src.astype(np.int16)) <= PIXEL_TOLERANCE).all(-1)
    pixels = float(same[outside].mean()) if outside.any() else 1.0
    return float(correct), (pixels if ok else 0.0), float(ok), pixels


def _frames(clip, what: str) -> np.ndarray:
    x = np.asarray(clip)
    if x.ndim != 4 or len(x) < 2 or x.shape[-1] != 3:
        raise ValueError(f"{what} must be a clip (frames >= 2, height, width, 3), got shape {x.shape}")
    return np.stack([to_uint8(f) for f in x])


def grade_clip_edit(edit: ClipEdit, output, source) -> dict[str, float]:
    """Scores of one edited clip (F, H, W, 3; uint8, or float in [0, 1]) against its source clip."""
    out, src = _frames(output, "the output"), _frames(source, "the source")
    if out.shape != src.shape:
        raise ValueError(f"output {out.shape} and source {src.shape} clips differ in frames or size")
    n = len(out)
    rows = np.array([_grade_frame(edit, detect(o), o, s, f / (n - 1)) for f, (o, s) in enumerate(zip(out, src))])
    correct, preservation, kept, pixels = rows.T
    return {
        "edit_correct": float(correct.mean()), "preservation": float(preservation.mean()),
        "overall": float((correct * preservation).mean()), "objects_kept": float(kept.mean()),
        "pixel_similarity": float(pixels.mean()),
    }


def score_clip_edits(edits: list[ClipEdit], outputs, sources) -> dict:
    """`overall`, `edit_correct`, `preservation` (fractions: means over the edit kinds present, each the mean over
    its clips) and `per_kind` with every key per kind and `n`."""
    graded: dict[str, list[dict]] = {k: [] for k in CLIP_EDIT_KINDS}
    for edit, out, src in zip(edits, outputs, sources, strict=True):
        graded[edit.kind].append(grade_clip_edit(edit, out, src))
    per_kind = {}
    for kind, rows in graded.items():
        if rows:
            per_kind[kind] = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
            per_kind[kind]["n"] = len(rows)
    if not per_kind:
        raise ValueError("no clips to score")
    scores: dict = {key: float(np.mean([v[key] for v in per_kind.values()])) for key in EDIT_KEYS}
    scores["per_kind"] = per_kind
    return scores


def grade_reference_clip(ref: ReferenceScene, clip) -> dict[str, float | None]:
    """Scores of one reference-to-video clip (F, H, W, 3): `reference_fidelity`, the clip scorer's keys, `overall`."""
    frames = _frames(clip, "the clip")
    want = Counter(_ident(o) for o in ref.references)
    fidelity = [float(not want - Counter((d.colour, d.shape) for d in detect(f))) for f in frames]
    res = grade_clip(ref.scene, frames)
    motion = [res[k] for k in PASS_KEYS if res[k] is not None]
    res["reference_fidelity"] = float(np.mean(fidelity))
    res["overall"] = float((res["reference_fidelity"] + np.mean(motion)) / 2)
    return res


def score_reference_clips(refs: list[ReferenceScene], clips) -> dict[str, float]:
    """Means over the clips: `overall`, `reference_fidelity`, the clip scorer's keys (over the clips each applies
    to) and `flicker` (lower is better)."""
    graded = [grade_reference_clip(r, c) for r, c in zip(refs, clips, strict=True)]
    if not graded:
        raise ValueError("no clips to score")
    scores = {}
    for key in ("overall", "reference_fidelity", *PASS_KEYS, "flicker"):
        vals = [g[key] for g in graded if g[key] is not None]
        if vals:
            scores[key] = float(np.mean(vals))
    return scores

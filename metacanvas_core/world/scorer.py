"""A deterministic detector and GenEval-style grader for shapes-world images.

Detection: classify each pixel to the nearest palette colour (or background), take 4-connected components per
colour, call the shape from how much of its bounding box a component fills (a square fills it) and how its area
splits between upper and lower half (a triangle, apex up, is bottom-heavy), and the grid cell from its centroid.
A prompt passes only if *everything* it states holds and nothing extra is drawn, as in GenEval.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .shapes import CATEGORIES, COLOURS, Scene

_PALETTE = np.array([(0, 0, 0), *COLOURS.values()], dtype=np.float32)
_NAMES = ("background", *COLOURS)
MAX_COLOUR_DISTANCE = 110.0  # RGB distance beyond which a pixel is no palette colour at all
MIN_AREA_SHARE = 12 / 1024  # components smaller than this share of the image are noise


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    cell: int
    area: int
    fill: float  # share of its bounding box the object covers: true squares 1.0, circles 0.70-0.88


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Accept uint8 HWC, or float HWC in [0, 1] (ComfyUI's IMAGE layout)."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        comp, queue = [], deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            comp.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(comp)
    return out


def _shape_of(comp: list[tuple[int, int]]) -> tuple[str, float]:
    """The shape and the fill of a component. Squares fill their box; triangles (apex up) keep most of their area
    in the lower half; circles neither."""
    ys, xs = np.array(comp).T
    fill = len(comp) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    if fill >= 0.88:
        return "square", fill
    mid = (ys.min() + ys.max()) / 2
    upper, lower = (ys < mid).sum(), (ys > mid).sum()
    return ("triangle" if upper < 0.6 * lower else "circle"), fill


def detect(image: np.ndarray) -> list[Detection]:
    """Objects found in one image (H, W, 3)."""
    img = to_uint8(np.asarray(image)).astype(np.float32)
    h, w, _ = img.shape
    dist = np.linalg.norm(img[:, :, None, :] - _PALETTE[None, None], axis=-1)
    label = dist.argmin(-1)
    label[dist.min(-1) > MAX_COLOUR_DISTANCE] = 0
    min_area = max(3, int(MIN_AREA_SHARE * h * w))
    dets = []
    for k, name in enumerate(_NAMES[1:], start=1):
        for comp in _components(label == k):
            if len(comp) < min_area:
                continue
            cy, cx = np.array(comp, dtype=np.float32).mean(0) + 0.5
            cell = min(int(cy * 3 / h), 2) * 3 + min(int(cx * 3 / w), 2)
            shape, fill = _shape_of(comp)
            dets.append(Detection(name, shape, cell, len(comp), round(float(fill), 4)))
    return dets


def grade(scene: Scene, dets: list[Detection]) -> bool:
    """Whether the detections satisfy the scene's caption under its category's rule."""
    want = scene.objects
    cat = scene.category
    if cat == "single_object":
        return len(dets) == 1 and dets[0].shape == want[0].shape
    if cat == "two_object":
        return len(dets) == 2 and Counter(d.shape for d in dets) == Counter(o.shape for o in want)
    if cat in ("counting", "colors", "color_attr"):
        return Counter((d.colour, d.shape) for d in dets) == Counter((o.colour, o.shape) for o in want)
    if cat == "position":
        return Counter((d.colour, d.shape, d.cell) for d in dets) == Counter((o.colour, o.shape, o.cell) for o in want)
    raise ValueError(f"unknown category {cat!r}; expected one of {CATEGORIES}")


# The summaries below take `found`: the detections of each image (`detect`), computed once per image.


def layout_score(scenes: list[Scene], found: list[list[Detection]]) -> float | None:
    """Placement alone: the share of position prompts whose drawn objects occupy exactly the stated cells, whatever
    their colour and shape (None without position prompts). Chance for one object is 1/9, for two 1/36."""
    hits = []
    for scene, dets in zip(scenes, found, strict=True):
        if scene.category == "position":
            hits.append(sorted(d.cell for d in dets) == sorted(o.cell for o in scene.objects))
    return float(np.mean(hits)) if hits else None


FAILURES: tuple[str, ...] = ("count", "repeated shape", "shape", "colour", "binding", "cell")


def failure(scene: Scene, dets: list[Detection]) -> str | None:
    """Why an image fails its prompt (None if it passes), the first broken requirement in this order: how many
    objects, which shapes, which colours, which colour goes with which shape ("binding"), where ("cell").

    A shape failure where the prompt names different shapes but every object is drawn as the same one is told
    apart as "repeated shape": the model did not give each object its own shape (the typical multi-object failure)."""
    if grade(scene, dets):
        return None
    want = scene.objects
    if len(dets) != len(want):
        return "count"
    if Counter(d.shape for d in dets) != Counter(o.shape for o in want):
        distinct_wanted = len({o.shape for o in want}) > 1
        return "repeated shape" if distinct_wanted and len({d.shape for d in dets}) == 1 else "shape"
    if Counter(d.colour for d in dets) != Counter(o.colour for o in want):
        return "colour"
    if Counter((d.colour, d.shape) for d in dets) != Counter((o.colour, o.shape) for o in want):
        return "binding"
    return "cell"


def failure_shares(scenes: list[Scene], found: list[list[Detection]]) -> dict[str, dict[str, float]]:
    """Per category, the share of its prompts failing for each reason of `FAILURES`."""
    counts = {c: Counter() for c in CATEGORIES}
    totals = Counter()
    for scene, dets in zip(scenes, found, strict=True):
        totals[scene.category] += 1
        why = failure(scene, dets)
        if why:
            counts[scene.category][why] += 1
    return {c: {k: counts[c][k] / totals[c] for k in FAILURES} for c in CATEGORIES if totals[c]}


def score_detections(scenes: list[Scene], found: list[list[Detection]]) -> dict[str, float]:
    """Per-category pass rates and `overall` (the mean over categories, as GenEval reports it)."""
    passed: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for scene, dets in zip(scenes, found, strict=True):
        passed[scene.category].append(grade(scene, dets))
    scores = {c: float(np.mean(v)) for c, v in passed.items() if v}
    scores["overall"] = float(np.mean(list(scores.values())))
    return scores


def position_score(scenes: list[Scene], found: list[list[Detection]]) -> float:
    """Share of stated objects found, with their colour and shape, in the stated cell (extra objects ignored)."""
    hits, total = 0, 0
    for scene, dets in zip(scenes, found, strict=True):
        drawn = {(d.colour, d.shape, d.cell) for d in dets}
        for o in scene.objects:
            hits += (o.colour, o.shape, o.cell) in drawn
            total += 1
    return hits / max(total, 1)

"""Grade generated clips against their captions: per-frame detection with the image scorer (`scorer.detect`).

Per clip, each object the caption names is followed through the frames by its colour (movers and still objects
have different colours in the clip world), the detection nearest its previous cell where a colour appears twice.
Categories (pass rates over the clips they apply to, like the image benchmark):

- `motion_direction`: the mover's cell goes the asked way, first frame to last (row and column steps have the
  asked signs, zero where no move is asked) and never steps back against it in between;
- `start_cell` / `end_cell`: the mover's cell in the first / last frame is the asked one;
- `still_objects`: every still object is in its cell, with its colour, in every frame (motion_still clips only);
- `colour_constant`: every named object is found with its colour in every frame;
- `shape_constant`: ... and drawn as its shape in every frame;
- `overall`: the mean of the above.

`flicker` (lower is better, not in `overall`): the mean absolute frame-to-frame change, in [0, 1] per channel,
of the pixels outside the movers (pixels of a mover's colour in either frame, grown by 2 px, are left out).
Rendered ground truth has 0.
"""

from __future__ import annotations

import numpy as np

from .clips import ClipScene
from .scorer import MAX_COLOUR_DISTANCE, Detection, detect, to_uint8
from .shapes import COLOURS

PASS_KEYS: tuple[str, ...] = (
    "motion_direction", "start_cell", "end_cell", "still_objects", "colour_constant", "shape_constant",
)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_COLOUR_INDEX = {c: i for i, c in enumerate(COLOURS)}


def _track(found: list[list[Detection]], colour: str, first_cell: int) -> list[Detection | None]:
    """The object of `colour` in every frame (None where none is drawn): the one nearest the previous frame's."""
    out, prev = [], divmod(first_cell, 3)
    for dets in found:
        same = [d for d in dets if d.colour == colour]
        if not same:
            out.append(None)
            continue
        best = min(same, key=lambda d: (abs(divmod(d.cell, 3)[0] - prev[0]) + abs(divmod(d.cell, 3)[1] - prev[1]),
                                        -d.area))
        out.append(best)
        prev = divmod(best.cell, 3)
    return out


def _direction_ok(track: list[Detection | None], want: tuple[int, int]) -> bool:
    cells = [divmod(d.cell, 3) for d in track if d is not None]
    if track[0] is None or track[-1] is None:
        return False
    total = (cells[-1][0] - cells[0][0], cells[-1][1] - cells[0][1])
    if tuple(int(np.sign(x)) for x in total) != want:
        return False
    for (r0, c0), (r1, c1) in zip(cells, cells[1:]):
        for step, way in ((r1 - r0, want[0]), (c1 - c0, want[1])):
            if step * way < 0 or (way == 0 and step != 0):  # a step back, or sideways off a straight line
                return False
    return True


def _colour_of_pixels(frames: np.ndarray) -> np.ndarray:
    """(F, H, W) palette index of every pixel (-1: background or no palette colour)."""
    x = frames.astype(np.float32)
    dist = np.linalg.norm(x[..., None, :] - _PALETTE, axis=-1)
    label = dist.argmin(-1)
    label[dist.min(-1) > MAX_COLOUR_DISTANCE] = -1
    return label


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(px):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def flicker(scene: ClipScene, frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change outside the movers, in [0, 1]."""
    frames = np.stack([to_uint8(np.asarray(f)) for f in frames])
    labels = _colour_of_pixels(frames)
    movers = np.zeros(labels.shape, dtype=bool)
    for m in scene.moving:
        movers |= labels == _COLOUR_INDEX[m.colour]
    x = frames.astype(np.float32) / 255.0
    changes = []
    for f in range(len(frames) - 1):
        keep = ~_grow(movers[f] | movers[f + 1], 2)
        if keep.any():
            changes.append(float(np.abs(x[f + 1] - x[f])[keep].mean()))
    return float(np.mean(changes)) if changes else 0.0


def grade_clip(scene: ClipScene, frames: np.ndarray) -> dict[str, float | None]:
    """Per-clip results: True/False (as 1.0/0.0) per key of `PASS_KEYS` (None where it does not apply), flicker.

    `frames`: (F, H, W, 3) uint8, or float in [0, 1] (ComfyUI's IMAGE batch)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"a clip is (frames >= 2, height, width, 3), got shape {frames.shape}")
    found = [detect(f) for f in frames]
    res: dict[str, float | None] = {}
    m = scene.moving[0]
    mover = _track(found, m.colour, m.start)
    res["motion_direction"] = float(_direction_ok(mover, m.direction))
    res["start_cell"] = float(mover[0] is not None and mover[0].cell == m.start)
    res["end_cell"] = float(mover[-1] is not None and mover[-1].cell == m.end)
    tracks = [(m.colour, m.shape, mover)] + [(o.colour, o.shape, _track(found, o.colour, o.cell)) for o in scene.still]
    stills = tracks[1:]
    res["still_objects"] = (
        float(all(d is not None and d.cell == o.cell for o, (_, _, tr) in zip(scene.still, stills) for d in tr))
        if scene.still else None
    )
    res["colour_constant"] = float(all(d is not None for _, _, tr in tracks for d in tr))
    res["shape_constant"] = float(all(d is not None and d.shape == s for _, s, tr in tracks for d in tr))
    res["flicker"] = flicker(scene, frames)
    return res


def score_clips(scenes: list[ClipScene], clips: list[np.ndarray]) -> dict[str, float]:
    """Pass rates per key of `PASS_KEYS` (over the clips each applies to), `overall` (their mean) and the mean
    `flicker` (lower is better)."""
    if len(scenes) != len(clips) or not scenes:
        raise ValueError(f"need one clip per scene and at least one: {len(scenes)} scenes, {len(clips)} clips")
    graded = [grade_clip(s, c) for s, c in zip(scenes, clips)]
    scores = {}
    for key in PASS_KEYS:
        vals = [g[key] for g in graded if g[key] is not None]
        if vals:
            scores[key] = float(np.mean(vals))
    scores["overall"] = float(np.mean(list(scores.values())))
    scores["flicker"] = float(np.mean([g["flicker"] for g in graded]))
    return scores

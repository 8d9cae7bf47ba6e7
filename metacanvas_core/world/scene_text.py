"""Shapes-world captions back to scenes: "a red circle at top left and a blue square moves from left to right" ->
the objects, so a scene (e.g. the start image of image-to-video) can be drawn from the words a prompt uses.

Each part (joined by "and") is "a <colour> <shape> at <position>", or "a <colour> <shape> moves from <position> to
<position>" (drawn at its start: the first frame of that motion). Every object needs its own cell.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import MetaCanvasError
from .shapes import COLOURS, POSITIONS, SHAPES, Obj, render

_POSITION = "|".join(sorted(POSITIONS, key=len, reverse=True))  # "top left" before "top"
_OBJECT = rf"an? (?P<colour>\w+) (?P<shape>\w+)"
_STILL = re.compile(rf"{_OBJECT} at (?P<at>{_POSITION})")
_MOVING = re.compile(rf"{_OBJECT} moves from (?P<start>{_POSITION}) to (?P<end>{_POSITION})")
FORMS = "'a red circle at top left' or 'a red circle moves from left to right', joined by 'and'"


def scene_objects(caption: str, where: str = "caption") -> tuple[Obj, ...]:
    """The objects a caption places, each at its (start) cell, in the caption's order. `where` names the input in
    errors."""
    if not isinstance(caption, str):
        raise MetaCanvasError(f"{where} must be text, got {type(caption).__name__}")
    text = " ".join(caption.lower().replace(",", " ").split())
    if not text:
        raise MetaCanvasError(f"{where} is empty: describe the scene, e.g. {FORMS}")
    objects: list[Obj] = []
    for part in text.split(" and "):
        m = _MOVING.fullmatch(part) or _STILL.fullmatch(part)
        if m is None:
            raise MetaCanvasError(f"{where}: cannot read {part!r}; write each object as {FORMS}")
        colour, shape = m["colour"], m["shape"]
        if colour not in COLOURS:
            raise MetaCanvasError(f"{where}: unknown colour {colour!r} in {part!r}; the shapes world has "
                                  f"{', '.join(COLOURS)}")
        if shape not in SHAPES:
            raise MetaCanvasError(f"{where}: unknown shape {shape!r} in {part!r}; the shapes world has "
                                  f"{', '.join(SHAPES)}")
        objects.append(Obj(colour, shape, POSITIONS.index(m["at"] if m.re is _STILL else m["start"])))
    cells = [o.cell for o in objects]
    if len(set(cells)) < len(cells):
        taken = sorted({POSITIONS[c] for c in cells if cells.count(c) > 1})
        raise MetaCanvasError(f"{where}: two objects start at {', '.join(taken)}; give each object its own cell")
    return tuple(objects)


def render_caption(caption: str, size: int, where: str = "caption") -> np.ndarray:
    """The scene a caption describes as uint8 (size, size, 3): deterministic, no jitter; movers drawn last."""
    return render(scene_objects(caption, where), size)

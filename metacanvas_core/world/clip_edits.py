"""Video edits and reference-to-video in the clip world: deterministic (source clip, instruction, target clip) triples
and (reference images, prompt, clip) scenes, in words the shipped planner's tokenizer knows.

Clip edits, each on a clip of `clips` (one mover, maybe a still object in another colour off its path):
  recolour   "make the red circle green"                      the mover, in a new colour, every frame
  direction  "make the red circle move from right to left"    the mover on a new straight path
  replace    "turn the red circle into a square"              the mover, a new shape, every frame
  remove     "remove the yellow square"                       the still object or the mover gone from every frame
  add        "add a yellow square at top left"                a still object off the mover's path, every frame
Reference-to-video: one or two reference images, each one object rendered alone (centred, 32x32 or 64x64, one size
per scene), and "the red circle moves from left to right" (+ " and the yellow square is at top left" for a second
reference): the clip shows the referenced objects, the first moving as asked, the second still.

Held-out combinations follow `clips`' split: an edit or reference scene is held out when the clip it asks for is held
out of the clip world's training clips (its motion, or its still object's colour, shape and cell); training triples
draw source and target from training clips only. So the benchmark asks for clips no training run has shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import shapes
from .clips import (
    FRAMES, MOTIONS, SIZE, ClipScene, Motion, _random_clip, _shift, caption, is_held_out, render_clip,
)
from .shapes import COLOURS, POSITIONS, SHAPES, Obj, model_pixels

CLIP_EDIT_KINDS: tuple[str, ...] = ("recolour", "direction", "replace", "remove", "add")
REFERENCE_SIZES: tuple[int, ...] = (32, 64)
MAX_REFERENCES = 2


@dataclass(frozen=True)
class ClipEdit:
    kind: str
    source: ClipScene
    target: ClipScene
    instruction: str
    subject: Motion | Obj | None  # what the instruction names in the source (None for add)
    result: Motion | Obj | None  # what it becomes, or the added object (None for remove)

    @property
    def held_out(self) -> bool:
        return is_held_out(self.target.moving, self.target.still)


def _scene(moving: tuple[Motion, ...], still: tuple[Obj, ...]) -> ClipScene:
    return ClipScene(moving, still, caption(moving, still), "motion_still" if still else "motion")


def instruction(kind: str, subject: Motion | Obj | None, result: Motion | Obj | None) -> str:
    if kind == "recolour":
        return f"make the {subject.colour} {subject.shape} {result.colour}"
    if kind == "direction":
        path = f"from {POSITIONS[result.start]} to {POSITIONS[result.end]}"
        return f"make the {subject.colour} {subject.shape} move {path}"
    if kind == "replace":
        return f"turn the {subject.colour} {subject.shape} into a {result.shape}"
    if kind == "remove":
        return f"remove the {subject.colour} {subject.shape}"
    if kind == "add":
        return f"add a {result.colour} {result.shape} at {result.position}"
    raise ValueError(f"unknown clip edit kind {kind!r}; expected one of {CLIP_EDIT_KINDS}")


def _random_edit(kind: str, rng: np.random.Generator) -> ClipEdit | None:
    """One edit of `kind`, or None where the drawn clip cannot take it (the caller draws again)."""
    category = {"remove": "motion_still", "add": "motion"}.get(kind, str(rng.choice(("motion", "motion_still"))))
    moving, still = _random_clip(category, rng)
    m = moving[0]
    source = _scene(moving, still)
    subject, result = m, None
    if kind == "recolour":  # a colour no other object has: who moved stays unambiguous
        options = [c for c in COLOURS if c != m.colour and c not in {o.colour for o in still}]
        result = Motion(str(rng.choice(options)), m.shape, m.start, m.end)
    elif kind == "replace":
        result = Motion(m.colour, str(rng.choice([s for s in SHAPES if s != m.shape])), m.start, m.end)
    elif kind == "direction":  # a new straight path that keeps clear of the still object
        paths = [(a, b) for a, b in MOTIONS if (a, b) != (m.start, m.end)
                 and all(Motion(m.colour, m.shape, a, b).clearance(o.cell) >= 0.99 for o in still)]
        a, b = paths[int(rng.integers(len(paths)))]
        result = Motion(m.colour, m.shape, a, b)
    elif kind == "remove":
        subject = still[0] if rng.random() < 0.5 else m
        target = ((), still) if subject is m else (moving, ())
        return ClipEdit(kind, source, _scene(*target), instruction(kind, subject, None), subject, None)
    elif kind == "add":
        free = [k for k in range(9) if m.clearance(k) >= 0.99]
        if not free:
            return None
        colour = str(rng.choice([c for c in COLOURS if c != m.colour]))
        result = Obj(colour, str(rng.choice(SHAPES)), int(rng.choice(free)))
        return ClipEdit(kind, source, _scene(moving, (result,)), instruction(kind, None, result), None, result)
    else:
        raise ValueError(f"unknown clip edit kind {kind!r}; expected one of {CLIP_EDIT_KINDS}")
    return ClipEdit(kind, source, _scene((result,), still), instruction(kind, subject, result), subject, result)


def _check_split(split: str) -> None:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")


def sample_clip_edit(rng: np.random.Generator, kind: str | None = None, split: str = "train") -> ClipEdit:
    """A random clip edit of `kind` (random if None) in `split`: "heldout" asks for a held-out clip; "train" has
    source and target both training clips."""
    _check_split(split)
    if kind is None:
        kind = str(rng.choice(CLIP_EDIT_KINDS))
    for _ in range(1000):
        edit = _random_edit(kind, rng)
        if edit is None:
            continue
        source_out = is_held_out(edit.source.moving, edit.source.still)
        if (edit.held_out if split == "heldout" else not (edit.held_out or source_out)):
            return edit
    raise RuntimeError(f"could not draw a {split} {kind} clip edit")


def clip_edit_benchmark(n: int, seed: int = 5678, split: str = "heldout") -> list[ClipEdit]:
    """`n` benchmark clip edits, the kinds in turn, identical for every method and run."""
    rng = np.random.default_rng(seed)
    return [sample_clip_edit(rng, CLIP_EDIT_KINDS[i % len(CLIP_EDIT_KINDS)], split=split) for i in range(n)]


def _draw(moving: tuple[Motion, ...], still: tuple[Obj, ...], slots: list[int], frames: int, size: int,
          base: int | None) -> np.ndarray:
    """uint8 (frames, size, size, 3) as `clips.render_clip` draws it (still objects, then movers on top), every
    object jittered by its own slot's generator, so an object in the same slot is drawn alike in two clips."""
    def one(o: Obj, slot: int) -> np.ndarray:
        return shapes.render((o,), size, None if base is None else np.random.default_rng([base, slot]))

    background = np.zeros((size, size, 3), dtype=np.uint8)
    for o, slot in zip(still, slots[len(moving):], strict=True):
        img = one(o, slot)
        background[img.any(-1)] = img[img.any(-1)]
    movers = [one(Obj(m.colour, m.shape, m.start), slot) for m, slot in zip(moving, slots[: len(moving)], strict=True)]
    cell, out = size / 3, np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        frame, t = background.copy(), f / (frames - 1)
        for m, img in zip(moving, movers):
            dr, dc = m.step
            moved = _shift(img, round(t * dr * cell), round(t * dc * cell))
            frame[moved.any(-1)] = moved[moved.any(-1)]
        out[f] = frame
    return out


def render_clip_edit(
    edit: ClipEdit, frames: int = FRAMES, size: int = SIZE, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source and target clips, uint8 (frames, size, size, 3). With `rng`, every object gets one jitter of up to a
    pixel for the whole clip, the same in both clips for what the edit leaves alone (and for the edited mover), so
    everything the edit does not touch is identical pixel for pixel."""
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    base = None if rng is None else int(rng.integers(2**31))
    # Slots: the mover 0, the still object 1, an added object 2 (a removed one frees its slot).
    src = edit.source
    src_slots = [0] * len(src.moving) + [1] * len(src.still)
    tgt = edit.target
    tgt_slots = [0] * len(tgt.moving) + [2 if edit.kind == "add" else 1] * len(tgt.still)
    return (_draw(src.moving, src.still, src_slots, frames, size, base),
            _draw(tgt.moving, tgt.still, tgt_slots, frames, size, base))


def sample_clip_edit_batch(
    rng: np.random.Generator, batch: int, frames: int = FRAMES, size: int = SIZE, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, list[ClipEdit]]:
    """A training batch: source and target clips as float (B, 3, frames, size, size) in [-1, 1] (the layout video
    VAEs encode), and their edits (kinds drawn uniformly, objects jittered)."""
    edits = [sample_clip_edit(rng, split=split) for _ in range(batch)]
    pairs = [render_clip_edit(e, frames, size, rng) for e in edits]
    return _clip_pixels([p[0] for p in pairs]), _clip_pixels([p[1] for p in pairs]), edits


def _clip_pixels(clips: list[np.ndarray]) -> np.ndarray:
    x = np.stack(clips)  # B, F, H, W, 3
    b, f, h, w, _ = x.shape
    return model_pixels(x.reshape(-1, h, w, 3)).reshape(b, f, 3, h, w).transpose(0, 2, 1, 3, 4)


@dataclass(frozen=True)
class ReferenceScene:
    """Reference-to-video: the clip `scene` asked for by `prompt` with the look of `references` (the mover first,
    then the still object), each given as an image of that object alone, `reference_size` pixels square."""

    scene: ClipScene
    references: tuple[Obj, ...]
    reference_size: int
    prompt: str

    @property
    def held_out(self) -> bool:
        return is_held_out(self.scene.moving, self.scene.still)


def reference_prompt(scene: ClipScene) -> str:
    m = scene.moving[0]
    parts = [f"the {m.colour} {m.shape} moves from {POSITIONS[m.start]} to {POSITIONS[m.end]}"]
    parts += [f"the {o.colour} {o.shape} is at {o.position}" for o in scene.still]
    return " and ".join(parts)


def sample_reference_scene(
    rng: np.random.Generator, references: int | None = None, split: str = "train"
) -> ReferenceScene:
    """A random reference-to-video scene with `references` (1 or 2; random if None) reference objects."""
    _check_split(split)
    n = int(rng.integers(1, MAX_REFERENCES + 1)) if references is None else references
    if n not in range(1, MAX_REFERENCES + 1):
        raise ValueError(f"references must be 1..{MAX_REFERENCES}, got {n}")
    for _ in range(1000):
        moving, still = _random_clip("motion" if n == 1 else "motion_still", rng)
        if is_held_out(moving, still) == (split == "heldout"):
            scene = _scene(moving, still)
            refs = tuple(Obj(o.colour, o.shape, 4) for o in (*moving, *still))
            size = int(rng.choice(REFERENCE_SIZES))
            return ReferenceScene(scene, refs, size, reference_prompt(scene))
    raise RuntimeError(f"could not draw a {split} reference scene")


def reference_benchmark(n: int, seed: int = 8765, split: str = "heldout") -> list[ReferenceScene]:
    """`n` benchmark reference scenes, one and two references in turn, identical for every method and run."""
    rng = np.random.default_rng(seed)
    return [sample_reference_scene(rng, 1 + i % MAX_REFERENCES, split=split) for i in range(n)]


def render_references(ref: ReferenceScene, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """The reference images, uint8 (reference_size, reference_size, 3): each object alone in the centre cell."""
    return [shapes.render((o,), ref.reference_size, rng) for o in ref.references]


def sample_reference_batch(
    rng: np.random.Generator, batch: int, frames: int = FRAMES, size: int = SIZE, split: str = "train"
) -> tuple[list[list[np.ndarray]], np.ndarray, list[ReferenceScene]]:
    """A training batch: each scene's reference images (uint8, as a user gives them), the clips as float
    (B, 3, frames, size, size) in [-1, 1], and the scenes (1 or 2 references, objects jittered)."""
    scenes = [sample_reference_scene(rng, split=split) for _ in range(batch)]
    refs = [render_references(r, rng) for r in scenes]
    return refs, _clip_pixels([render_clip(r.scene, frames, size, rng) for r in scenes]), scenes


def clip_edit_words() -> set[str]:
    """Every word an instruction or reference prompt can use."""
    words = {"make", "the", "move", "moves", "from", "to", "add", "a", "at", "remove", "turn", "into", "and", "is"}
    words |= set(COLOURS) | set(SHAPES)
    for p in POSITIONS:
        words |= set(p.split())
    return words

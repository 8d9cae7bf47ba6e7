"""The edit world: deterministic (source scene, instruction, target scene) triples on the shapes world's 3x3 grid.

Five kinds of edit, each said in words the shapes-world tokenizer already knows:
  recolour  "make the red circle green"                 (same cell, same shape, new colour)
  move      "move the blue square to top left"          (same object, new free cell)
  add       "add a yellow triangle at bottom right"     (a new object in a free cell)
  remove    "remove the green circle"                   (the cell becomes empty)
  replace   "turn the red circle into a triangle"       (same cell, same colour, new shape)
Every object of a scene has its own (colour, shape), before and after the edit, so "the red circle" names exactly one
object. As in shapes.py, a fixed hash-based share of each kind's combinations (e.g. a recolour's shape, old and new
colour) is held out of training, so the benchmark measures edits composed, not memorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shapes import (
    COLOURS, HELD_OUT_SHARE, POSITIONS, SHAPES, Obj, Scene, _stable_hash, describe, model_pixels, render,
)

EDIT_KINDS: tuple[str, ...] = ("recolour", "move", "add", "remove", "replace")
MAX_OBJECTS = 3  # objects in a source scene


@dataclass(frozen=True)
class Edit:
    kind: str
    source: tuple[Obj, ...]
    # The source's objects in the same order, the edited one changed in place; `remove` drops it, `add` appends.
    target: tuple[Obj, ...]
    instruction: str
    subject: Obj | None  # the source object the instruction names (None for add)
    result: Obj | None  # what it becomes, or the added object (None for remove)

    @property
    def edited_cells(self) -> frozenset[int]:
        """The cells the edit changes; everything outside them stays as it was."""
        return frozenset(o.cell for o in (self.subject, self.result) if o is not None)

    @property
    def source_scene(self) -> Scene:
        return Scene(self.source, describe(self.source), "position")

    @property
    def target_scene(self) -> Scene:
        return Scene(self.target, describe(self.target), "position")

    @property
    def combination(self) -> str:
        """What the instruction combines, the unit held out of training."""
        s, r = self.subject, self.result
        if self.kind == "recolour":
            return f"recolour:{s.shape} {s.colour}>{r.colour}"
        if self.kind == "move":
            return f"move:{s.colour} {s.shape}>{r.cell}"
        if self.kind == "add":
            return f"add:{r.colour} {r.shape}>{r.cell}"
        if self.kind == "remove":
            return f"remove:{s.colour} {s.shape}@{s.cell}"
        return f"replace:{s.colour} {s.shape}>{r.shape}"

    @property
    def held_out(self) -> bool:
        return _stable_hash(self.combination) % HELD_OUT_SHARE == 0


def instruction(kind: str, subject: Obj | None, result: Obj | None) -> str:
    if kind == "recolour":
        return f"make the {subject.colour} {subject.shape} {result.colour}"
    if kind == "move":
        return f"move the {subject.colour} {subject.shape} to {result.position}"
    if kind == "add":
        return f"add a {result.colour} {result.shape} at {result.position}"
    if kind == "remove":
        return f"remove the {subject.colour} {subject.shape}"
    if kind == "replace":
        return f"turn the {subject.colour} {subject.shape} into a {result.shape}"
    raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")


def _source_objects(rng: np.random.Generator, n: int) -> tuple[Obj, ...]:
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    picked = rng.choice(len(pairs), size=n, replace=False)
    cells = rng.choice(9, size=n, replace=False)
    return tuple(Obj(pairs[p][0], pairs[p][1], int(c)) for p, c in zip(picked, cells))


def _random_edit(kind: str, rng: np.random.Generator) -> Edit:
    source = _source_objects(rng, int(rng.integers(1, MAX_OBJECTS + 1)))
    taken_pairs = {(o.colour, o.shape) for o in source}
    free_cells = [c for c in range(9) if c not in {o.cell for o in source}]
    k = int(rng.integers(len(source)))
    subject = source[k]
    if kind == "add":
        new_pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in taken_pairs]
        colour, shape = new_pairs[int(rng.integers(len(new_pairs)))]
        result = Obj(colour, shape, int(rng.choice(free_cells)))
        return Edit(kind, source, source + (result,), instruction(kind, None, result), None, result)
    if kind == "remove":
        target = source[:k] + source[k + 1:]
        return Edit(kind, source, target, instruction(kind, subject, None), subject, None)
    if kind == "recolour":
        options = [c for c in COLOURS if (c, subject.shape) not in taken_pairs]
        result = Obj(str(rng.choice(options)), subject.shape, subject.cell) if options else None
    elif kind == "replace":
        options = [s for s in SHAPES if (subject.colour, s) not in taken_pairs]
        result = Obj(subject.colour, str(rng.choice(options)), subject.cell) if options else None
    elif kind == "move":
        result = Obj(subject.colour, subject.shape, int(rng.choice(free_cells)))
    else:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    if result is None:  # every other colour (shape) of this object is already taken in the scene
        return _random_edit(kind, rng)
    target = source[:k] + (result,) + source[k + 1:]
    return Edit(kind, source, target, instruction(kind, subject, result), subject, result)


def sample_edit(rng: np.random.Generator, kind: str | None = None, split: str = "train") -> Edit:
    """A random edit of `kind` (random if None) whose combination is in `split` ("train" or "heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if kind is None:
        kind = str(rng.choice(EDIT_KINDS))
    for _ in range(1000):
        edit = _random_edit(kind, rng)
        if edit.held_out == (split == "heldout"):
            return edit
    raise RuntimeError(f"could not draw a {split} {kind} edit")


def edit_benchmark(n: int, seed: int = 4321, split: str = "heldout") -> list[Edit]:
    """`n` benchmark edits, the kinds in turn, identical for every method and run."""
    rng = np.random.default_rng(seed)
    return [sample_edit(rng, EDIT_KINDS[i % len(EDIT_KINDS)], split=split) for i in range(n)]


def render_pair(edit: Edit, size: int = 32, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source and target images, uint8 (size, size, 3). With `rng`, every object gets a jitter of up to a pixel,
    the same in both images for the objects the edit leaves alone (and for a recoloured or reshaped one), so
    everything outside the edited cells is identical pixel for pixel."""
    if rng is None:
        return render(edit.source, size), render(edit.target, size)
    base = int(rng.integers(2**31))
    # The slot of each target object in the source (the added object takes a new one).
    slots = list(range(len(edit.source)))
    if edit.kind == "remove":
        slots.remove(edit.source.index(edit.subject))
    elif edit.kind == "add":
        slots.append(len(edit.source))

    def draw(objects: tuple[Obj, ...], object_slots: list[int]) -> np.ndarray:
        img = np.zeros((size, size, 3), dtype=np.uint8)
        for o, slot in zip(objects, object_slots, strict=True):
            one = render((o,), size, np.random.default_rng([base, slot]))
            drawn = one.any(-1)
            img[drawn] = one[drawn]
        return img

    return draw(edit.source, list(range(len(edit.source)))), draw(edit.target, slots)


def sample_edit_batch(
    rng: np.random.Generator, batch: int, size: int = 32, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, list[Edit]]:
    """A training batch: source and target images as float (B, 3, size, size) in [-1, 1], and their edits (the
    kinds drawn uniformly, objects jittered)."""
    edits = [sample_edit(rng, split=split) for _ in range(batch)]
    pairs = [render_pair(e, size, rng) for e in edits]
    return model_pixels(np.stack([p[0] for p in pairs])), model_pixels(np.stack([p[1] for p in pairs])), edits


def edit_words() -> set[str]:
    """Every word an instruction can use (all in the shapes world's vocabulary)."""
    words = {"make", "the", "move", "to", "add", "a", "at", "remove", "turn", "into"}
    words |= set(COLOURS) | set(SHAPES)
    for p in POSITIONS:
        words |= set(p.split())
    return words


def identity_edit(edit: Edit, rng: np.random.Generator) -> Edit:
    """An edit of `edit`'s source that changes nothing: "move the red circle to top left" for the red circle already
    at top left (target = source). The sanity task of editing: a Kontext DiT that cannot learn it does not read its
    reference tokens."""
    subject = edit.source[int(rng.integers(len(edit.source)))]
    return Edit("move", edit.source, edit.source, instruction("move", subject, subject), subject, subject)

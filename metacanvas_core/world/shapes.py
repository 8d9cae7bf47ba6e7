"""The shapes world: a closed vocabulary of coloured shapes on a 3x3 grid, rendered deterministically.

Every scene is a list of objects, each sitting in its own grid cell, plus the caption that describes it. The same
generator feeds the planner's pre-training, the backbone training and the benchmark; a fixed, hash-based share of
attribute combinations is *held out* of every training caption so the benchmark measures generalisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "green": (50, 180, 70),
    "blue": (50, 90, 235),
    "yellow": (235, 205, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Row-major names of the 3x3 cells.
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
# Benchmark categories, GenEval style.
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# Words later tasks (editing, video) use; kept in the vocabulary now so the tokenizer never changes.
EXTRA_WORDS: tuple[str, ...] = (
    "a", "an", "and", "at", "the", "is", "where", "what", "how", "many", "describe", "there", "of",
    "make", "move", "moves", "from", "to", "remove", "add", "turn", "turns", "into", "small", "big",
    "bigger", "smaller", "image", "video", "?", ".", ",",
)

HELD_OUT_SHARE = 4  # one combination in four is held out


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    cell: int  # 0..8, row-major

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    caption: str
    category: str


def vocabulary() -> list[str]:
    words = set(EXTRA_WORDS) | set(COLOURS) | set(SHAPES) | {s + "s" for s in SHAPES}
    words |= set(COUNT_WORDS.values())
    for p in POSITIONS:
        words |= set(p.split())
    return sorted(words)


def _stable_hash(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16)


def combination_key(category: str, objects: tuple[Obj, ...]) -> str | None:
    """The attribute combination a caption of this category states, or None where nothing is held out."""
    if category == "position":
        return "pos:" + "|".join(sorted(f"{o.colour} {o.shape} {o.cell}" for o in objects))
    if category == "color_attr":
        return "attr:" + "|".join(sorted(f"{o.colour} {o.shape}" for o in objects))
    if category == "colors":
        return f"col:{objects[0].colour} {objects[0].shape}"
    if category == "counting":
        return f"cnt:{len(objects)} {objects[0].colour} {objects[0].shape}"
    return None


def is_held_out(category: str, objects: tuple[Obj, ...]) -> bool:
    """Position prompts are held out per (colour, shape, cell) triple: any held-out triple holds the caption out."""
    if category == "position":
        return any(_stable_hash(f"pos:{o.colour} {o.shape} {o.cell}") % HELD_OUT_SHARE == 0 for o in objects)
    key = combination_key(category, objects)
    return key is not None and _stable_hash(key) % HELD_OUT_SHARE == 0


def _caption(category: str, objects: tuple[Obj, ...]) -> str:
    o = objects[0]
    if category == "single_object":
        return f"a {o.shape}"
    if category == "two_object":
        return f"a {objects[0].shape} and a {objects[1].shape}"
    if category == "counting":
        return f"{COUNT_WORDS[len(objects)]} {o.colour} {o.shape}s"
    if category == "colors":
        return f"a {o.colour} {o.shape}"
    if category == "position":
        return " and ".join(f"a {x.colour} {x.shape} at {x.position}" for x in objects)
    if category == "color_attr":
        return " and ".join(f"a {x.colour} {x.shape}" for x in objects)
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def describe(objects: tuple[Obj, ...]) -> str:
    """The full description of a scene (used to pre-train the planner): every object, in reading order."""
    return " and ".join(f"a {o.colour} {o.shape} at {o.position}" for o in sorted(objects, key=lambda o: o.cell))


def _random_objects(category: str, rng: np.random.Generator) -> tuple[Obj, ...]:
    colours, shapes = list(COLOURS), list(SHAPES)
    if category in ("single_object", "colors"):
        n = 1
    elif category == "counting":
        n = int(rng.integers(2, 5))
    elif category == "position":
        n = int(rng.integers(1, 3))
    else:
        n = 2
    cells = rng.choice(9, size=n, replace=False)
    if category == "counting":
        c, s = rng.choice(colours), rng.choice(shapes)
        return tuple(Obj(str(c), str(s), int(k)) for k in cells)
    if category in ("two_object", "color_attr"):
        s1, s2 = rng.choice(shapes, size=2, replace=False)
        c1, c2 = rng.choice(colours, size=2, replace=False)
        return (Obj(str(c1), str(s1), int(cells[0])), Obj(str(c2), str(s2), int(cells[1])))
    return tuple(Obj(str(rng.choice(colours)), str(rng.choice(shapes)), int(k)) for k in cells)


def sample_scene(rng: np.random.Generator, category: str | None = None, split: str = "train") -> Scene:
    """A random scene of `category` (random if None) whose caption is in `split` ("train" or "heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if category is None:
        category = str(rng.choice(CATEGORIES))
    for _ in range(1000):
        objects = _random_objects(category, rng)
        held = is_held_out(category, objects)
        # single_object / two_object name only shape classes (three of them): nothing to hold out there.
        nothing_held = combination_key(category, objects) is None
        if (split == "train" and not held) or (split == "heldout" and (held or nothing_held)):
            return Scene(objects, _caption(category, objects), category)
    raise RuntimeError(f"could not draw a {split} scene for {category}")


def benchmark_prompts(n: int, seed: int = 1234, split: str = "heldout") -> list[Scene]:
    """`n` benchmark scenes, the same categories in turn, identical for every method and run.

    `split="train"` draws combinations seen in training instead: scored alike, the difference to the held-out
    prompts is what the models memorised rather than composed."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, CATEGORIES[i % len(CATEGORIES)], split=split) for i in range(n)]


def render(objects: tuple[Obj, ...], size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """Render objects on a black canvas as uint8 (size, size, 3). A jitter of up to one pixel if `rng` is given."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    cs = size / 3
    r = 0.4 * cs
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for o in objects:
        row, col = divmod(o.cell, 3)
        cy, cx = (row + 0.5) * cs, (col + 0.5) * cs
        if rng is not None:
            cy, cx = cy + rng.uniform(-1, 1), cx + rng.uniform(-1, 1)
        if o.shape == "circle":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif o.shape == "square":
            h = r * 0.9
            mask = (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)
        elif o.shape == "triangle":
            top, bottom = cy - r, cy + r
            half_w = (yy - top) / (2 * r) * r * 1.1
            mask = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_w)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
        img[mask] = COLOURS[o.colour]
    return img


def sample_batch(
    rng: np.random.Generator, batch: int, size: int = 32, split: str = "train"
) -> tuple[np.ndarray, list[Scene]]:
    """A training batch: float images in [-1, 1] (B, 3, size, size) and their scenes."""
    scenes = [sample_scene(rng, split=split) for _ in range(batch)]
    return model_pixels(np.stack([render(s.objects, size, rng) for s in scenes])), scenes


def model_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 renders (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], what the VAE encodes."""
    return (images.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)

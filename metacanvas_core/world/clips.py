"""The clip world: short clips of shapes-world objects moving across the 3x3 grid, rendered deterministically.

Same palette, shapes and renderer as `shapes` (each object is drawn by `shapes.render` at its start cell and shifted
by whole pixels along a straight line), and captions built from words the shipped planner's tokenizer already
knows, so the image-trained planner reads them unchanged:

- "motion":       "a red circle moves from left to right" (one object, start and end cell on a row, column or
                  diagonal of the grid, one or two cells apart);
- "motion_still": "a red circle moves from left to right and a yellow square at top left" (plus an object that
                  stays in its cell, off the mover's path, in another colour).

Defaults: 17 frames of 32x32 at 8 fps (a tiny `AutoencoderKLWan` makes 5 latent frames of 8x8; 3 keyframes sit
on latent frames 0, 2 and 4, 1 s apart). The first frame is the start image of image-to-video. A fixed,
hash-based share of (colour, shape, start, end) motions, and of still (colour, shape, cell) triples as in
`shapes`, is held out of every training clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import shapes
from .shapes import COLOURS, POSITIONS, SHAPES, Obj

FRAMES = 17
SIZE = 32  # the shapes world's image size: the image scorer and the planner read 32x32
FPS = 8.0
CLIP_CATEGORIES: tuple[str, ...] = ("motion", "motion_still")
HELD_OUT_SHARE = shapes.HELD_OUT_SHARE


def _rc(cell: int) -> tuple[int, int]:
    return divmod(cell, 3)


def _straight(a: int, b: int) -> bool:
    (r0, c0), (r1, c1) = _rc(a), _rc(b)
    dr, dc = r1 - r0, c1 - c0
    return a != b and (dr == 0 or dc == 0 or abs(dr) == abs(dc))


# Every (start, end) pair on a row, column or diagonal: 56 motions.
MOTIONS: tuple[tuple[int, int], ...] = tuple((a, b) for a in range(9) for b in range(9) if _straight(a, b))


@dataclass(frozen=True)
class Motion:
    colour: str
    shape: str
    start: int  # cells, row-major as in shapes.POSITIONS
    end: int

    @property
    def step(self) -> tuple[int, int]:
        """(rows, cols) travelled, each in -2..2."""
        (r0, c0), (r1, c1) = _rc(self.start), _rc(self.end)
        return r1 - r0, c1 - c0

    @property
    def direction(self) -> tuple[int, int]:
        """Unit direction (sign of rows, sign of cols): (0, 1) is to the right, (1, 0) down."""
        dr, dc = self.step
        return int(np.sign(dr)), int(np.sign(dc))

    def centre(self, t: float) -> tuple[float, float]:
        """(row, col) in cell units at time t in [0, 1]; cell centres sit at k + 0.5."""
        (r0, c0), (r1, c1) = _rc(self.start), _rc(self.end)
        return r0 + 0.5 + t * (r1 - r0), c0 + 0.5 + t * (c1 - c0)

    def clearance(self, cell: int) -> float:
        """Distance (cell units) from `cell`'s centre to the path; objects are 0.8 cells wide."""
        (ar, ac), (br, bc) = self.centre(0.0), self.centre(1.0)
        r, c = _rc(cell)
        p, a, d = np.array([r + 0.5, c + 0.5]), np.array([ar, ac]), np.array([br - ar, bc - ac])
        t = float(np.clip(np.dot(p - a, d) / np.dot(d, d), 0.0, 1.0))
        return float(np.linalg.norm(p - (a + t * d)))


@dataclass(frozen=True)
class ClipScene:
    moving: tuple[Motion, ...]
    still: tuple[Obj, ...]
    caption: str
    category: str


def caption(moving: tuple[Motion, ...], still: tuple[Obj, ...]) -> str:
    parts = [f"a {m.colour} {m.shape} moves from {POSITIONS[m.start]} to {POSITIONS[m.end]}" for m in moving]
    parts += [f"a {o.colour} {o.shape} at {o.position}" for o in still]
    return " and ".join(parts)


def motion_held_out(m: Motion) -> bool:
    return shapes._stable_hash(f"mot:{m.colour} {m.shape} {m.start}>{m.end}") % HELD_OUT_SHARE == 0


def is_held_out(moving: tuple[Motion, ...], still: tuple[Obj, ...]) -> bool:
    """Held out if any motion is, or any still object's (colour, shape, cell) is held out of the image captions."""
    return any(motion_held_out(m) for m in moving) or (bool(still) and shapes.is_held_out("position", still))


def _random_clip(category: str, rng: np.random.Generator) -> tuple[tuple[Motion, ...], tuple[Obj, ...]]:
    colours = list(COLOURS)
    start, end = MOTIONS[int(rng.integers(len(MOTIONS)))]
    c_move = str(rng.choice(colours))
    m = Motion(c_move, str(rng.choice(SHAPES)), start, end)
    if category == "motion":
        return (m,), ()
    free = [k for k in range(9) if m.clearance(k) >= 0.99]  # never touched by the mover
    other = [c for c in colours if c != c_move]  # another colour: who moved stays unambiguous
    still = Obj(str(rng.choice(other)), str(rng.choice(SHAPES)), int(rng.choice(free)))
    return (m,), (still,)


def sample_clip(rng: np.random.Generator, category: str | None = None, split: str = "train") -> ClipScene:
    """A random clip scene of `category` (random if None) whose combination is in `split` ("train"/"heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if category is None:
        category = str(rng.choice(CLIP_CATEGORIES))
    if category not in CLIP_CATEGORIES:
        raise ValueError(f"unknown clip category {category!r}; expected one of {CLIP_CATEGORIES}")
    for _ in range(1000):
        moving, still = _random_clip(category, rng)
        if is_held_out(moving, still) == (split == "heldout"):
            return ClipScene(moving, still, caption(moving, still), category)
    raise RuntimeError(f"could not draw a {split} clip for {category}")


def benchmark_clips(n: int, seed: int = 1234, split: str = "heldout") -> list[ClipScene]:
    """`n` benchmark clip scenes, the categories in turn, identical for every method and run."""
    rng = np.random.default_rng(seed)
    return [sample_clip(rng, CLIP_CATEGORIES[i % len(CLIP_CATEGORIES)], split=split) for i in range(n)]


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate by whole pixels, filling with background (never wrapping around)."""
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = img[ys, xs]
    return out


def render_clip(
    scene: ClipScene, frames: int = FRAMES, size: int = SIZE, rng: np.random.Generator | None = None
) -> np.ndarray:
    """uint8 (frames, size, size, 3). Movers go from their start to their end cell centre at constant speed, first
    frame to last, drawn over the still objects. With `rng`, every object gets one jitter of up to a pixel
    (`shapes.render`'s) kept for the whole clip, so jitter never flickers."""
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    background = shapes.render(scene.still, size, rng)
    movers = [shapes.render((Obj(m.colour, m.shape, m.start),), size, rng) for m in scene.moving]
    cell = size / 3
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        frame = background.copy()
        t = f / (frames - 1)
        for m, img in zip(scene.moving, movers):
            dr, dc = m.step
            moved = _shift(img, round(t * dr * cell), round(t * dc * cell))
            drawn = moved.any(-1)
            frame[drawn] = moved[drawn]
        out[f] = frame
    return out


def start_image(scene: ClipScene, size: int = SIZE, rng: np.random.Generator | None = None) -> np.ndarray:
    """The first frame, (size, size, 3) uint8: the given image of image-to-video."""
    return render_clip(scene, 2, size, rng)[0]


def sample_clip_batch(
    rng: np.random.Generator, batch: int, frames: int = FRAMES, size: int = SIZE, split: str = "train"
) -> tuple[np.ndarray, list[ClipScene]]:
    """A training batch: float clips in [-1, 1] (B, 3, frames, size, size), the layout video VAEs encode."""
    scenes = [sample_clip(rng, split=split) for _ in range(batch)]
    clips = np.stack([render_clip(s, frames, size, rng) for s in scenes])  # B, F, H, W, 3
    pixels = shapes.model_pixels(clips.reshape(-1, size, size, 3))  # B*F, 3, H, W
    return pixels.reshape(batch, frames, 3, size, size).transpose(0, 2, 1, 3, 4), scenes

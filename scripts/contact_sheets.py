"""Contact sheets of the built-in weights, one PNG per task in docs/sheets/: 8 held-out benchmark scenes, sampled as
`evaluate` samples them (seed 0: sample i starts from noise seeded i, 20 steps, CFG 3), with the task's input, then
MetaCanvas and global conditioning side by side; clips as frame strips (every 4th frame). Each row is labelled with
its prompt; with all six, overview.png holds each one's first row. Usage: .venv/bin/python scripts/contact_sheets.py
[--tasks t2v edit ...] [--out docs/sheets]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from metacanvas_core import tasks
from metacanvas_core.pipeline import MetaCanvasPipeline

SCENES, ZOOM, EVERY, GAP, LABEL = 8, 3, 4, 6, 220
METHODS = ("metacanvas", "global")


def _frames(x: np.ndarray) -> list[np.ndarray]:
    """An image (H, W, 3) or frames (..., H, W, 3) in [0, 1] -> the frames shown (a clip: every EVERY-th)."""
    x = x.reshape(-1, *x.shape[-3:])
    return list(x[::EVERY] if len(x) > 5 else x)


def _strip(frames: list[np.ndarray], width: int, height: int) -> Image.Image:
    """Frames side by side, each shown at the benchmark's size x ZOOM (inputs such as references may be larger)."""
    tiles = [Image.fromarray((np.clip(f, 0, 1) * 255).round().astype(np.uint8)) for f in frames]
    tiles = [t.resize((width * ZOOM, height * ZOOM), Image.NEAREST if t.width <= width else Image.BOX)
             for t in tiles]
    out = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), tiles[0].height), "white")
    for i, t in enumerate(tiles):
        out.paste(t, (i * (t.width + 2), 0))
    return out


def _sample(definition: tasks.TaskDefinition, method: str, scenes: list) -> list[np.ndarray]:
    bench = definition.benchmark
    pipe = MetaCanvasPipeline.builtin(method, definition.name)
    outputs = []
    for i in range(0, len(scenes), bench.batch):
        chunk = scenes[i : i + bench.batch]
        result = pipe([bench.prompt(c) for c in chunk], task=definition.name, given=bench.given(chunk),
                      width=bench.width, height=bench.height, frames=bench.frames, steps=20, cfg=3.0,
                      seed=[i + j for j in range(len(chunk))])
        outputs.extend(bench.outputs(result.images))
    return outputs


def sheet(definition: tasks.TaskDefinition) -> Image.Image:
    bench = definition.benchmark
    scenes = bench.scenes(SCENES, "heldout")
    given = [bench.given([s]) for s in scenes]
    size = bench.width, bench.height
    columns = ([] if given[0] is None else [[_strip(_frames(g.numpy()), *size) for g in given]])
    columns += [[_strip(_frames(o), *size) for o in _sample(definition, m, scenes)] for m in METHODS]
    heads = ([] if given[0] is None else [definition.given.what]) + ["MetaCanvas", "global"]
    widths = [max(s.width for s in col) for col in columns]
    row_h, head_h = max(s.height for col in columns for s in col), 18
    out = Image.new("RGB", (LABEL + sum(widths) + GAP * len(widths), head_h + SCENES * (row_h + GAP)), "white")
    draw = ImageDraw.Draw(out)
    x = LABEL
    for head, col, w in zip(heads, columns, widths):
        draw.text((x, 3), head, fill="black")
        for r, s in enumerate(col):
            out.paste(s, (x, head_h + r * (row_h + GAP)))
        x += w + GAP
    for r, scene in enumerate(scenes):
        words, lines = bench.prompt(scene).split(), [""]
        for word in words:  # wrap the prompt to the label column
            lines[-1:] = [lines[-1] + " " + word] if len(lines[-1]) + len(word) < 40 else [lines[-1], word]
        draw.multiline_text((4, head_h + r * (row_h + GAP) + 4), "\n".join(s.strip() for s in lines), fill="black")
    return out


def overview(folder: Path) -> Image.Image:
    """The first row of every task's sheet (with its column heads), one under another, titled by task."""
    rows = []
    for name, definition in tasks.TASKS.items():
        full = Image.open(folder / f"{name}.png")
        first = full.crop((0, 0, full.width, 18 + definition.benchmark.height * ZOOM))
        titled = Image.new("RGB", (first.width, first.height + 14), "white")
        ImageDraw.Draw(titled).text((4, 0), definition.title, fill="black")
        titled.paste(first, (0, 14))
        rows.append(titled)
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height + GAP for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + GAP
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="*", default=list(tasks.TASKS), choices=list(tasks.TASKS))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "sheets")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in args.tasks:
        path = args.out / f"{name}.png"
        sheet(tasks.task(name)).save(path)
        print(f"wrote {path}")
    if all((args.out / f"{name}.png").exists() for name in tasks.TASKS):
        overview(args.out).save(args.out / "overview.png")
        print(f"wrote {args.out / 'overview.png'}")


if __name__ == "__main__":
    main()

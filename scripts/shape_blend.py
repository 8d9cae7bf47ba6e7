"""Does the DiT give each object its own shape, or blend the named shapes into one in-between silhouette?

For prompts that name a circle and a square, every detected object's fill (the share of its bounding box it
covers; true renders: squares 1.0, circles 0.70-0.88) is sorted into circle-like, in-between and square-like. The
first rows, lone circles and squares, calibrate the bands on the DiT's own drawings. Same seeds for every method.
Prints a Markdown table (docs/experiments.md, "Repeated shape is shape blending").

Usage: .venv/bin/python scripts/shape_blend.py [--seeds 60] [--sampler euler --shift 1]
       [--weights extra.safetensors ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metacanvas_core.builtin import PLANNER, SANA_T2I
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, SAMPLERS
from metacanvas_core.world.scorer import detect

CIRCLE_LIKE, SQUARE_LIKE = 0.84, 0.95  # 95 % of the shipped DiT's lone circles fill less, 75 % of its squares more
PROMPTS = (
    "a circle",
    "a square",
    "a circle and a square",
    "a red circle and a blue square",
    "a red circle at top left and a blue square at bottom right",
    "a blue square at top and a green circle at bottom",
)


def bands(pipe: MetaCanvasPipeline, prompt: str, seeds: int, **sampler) -> tuple[int, float, float, float]:
    images = pipe([prompt] * seeds, width=32, height=32, steps=20, cfg=3.0, seed=list(range(seeds)), **sampler).images
    fills = np.array([d.fill for image in images.numpy() for d in detect(image)])
    between = (fills >= CIRCLE_LIKE) & (fills < SQUARE_LIKE)
    return len(fills), float((fills < CIRCLE_LIKE).mean()), float(between.mean()), float((fills >= SQUARE_LIKE).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=60, help="images per prompt and method")
    ap.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help="as for generate")
    ap.add_argument("--shift", type=float, default=DEFAULT_SHIFT, help="flow shift of --sampler euler or dpmpp_2m")
    ap.add_argument("--weights", type=Path, nargs="*", default=[], help="more MetaCanvas weights to compare")
    args = ap.parse_args()
    pipes = {m: MetaCanvasPipeline.builtin(m) for m in ("metacanvas", "global")}
    pipes |= {w.stem: MetaCanvasPipeline.from_pretrained(PLANNER, SANA_T2I, w) for w in args.weights}
    print("| weights | prompt | objects | circle-like | in-between | square-like |")
    print("|---|---|---|---|---|---|")
    for name, pipe in pipes.items():
        for prompt in PROMPTS:
            n, circle, between, square = bands(pipe, prompt, args.seeds, sampler=args.sampler, shift=args.shift)
            print(f"| {name} | {prompt} | {n} | {100 * circle:.0f} % | {100 * between:.0f} % | {100 * square:.0f} % |",
                  flush=True)


if __name__ == "__main__":
    main()

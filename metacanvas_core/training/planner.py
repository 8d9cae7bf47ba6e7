"""Teach the tiny Qwen2.5-VL planner the shapes world: captioning, grounding and counting questions about
images, plus plain caption language modelling. Through the model's own forward (its own M-RoPE for the image).

A planner that understands the world matters: in the feasibility run a frozen *random* planner gave a position
score of 0.07 against 0.22 for a caption-trained one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..world import shapes
from ..world.tiny_models import IMAGE_SIZE, image_processor, new_planner, save_planner_folder
from .loop import ResumableRun

IMAGE_TOKENS = (IMAGE_SIZE // 8) ** 2  # patch 4, merge 2


def _example(rng: np.random.Generator) -> tuple[str, str, np.ndarray | None]:
    """(question, answer, image or None)."""
    scene = shapes.sample_scene(rng)
    objs = scene.objects
    image = shapes.render(objs, IMAGE_SIZE, rng)
    task = rng.random()
    if task < 0.35:
        return "describe", shapes.describe(objs), image
    if task < 0.55:
        o = objs[int(rng.integers(len(objs)))]
        return f"where is the {o.colour} {o.shape} ?", o.position, image
    if task < 0.7:
        cell = int(rng.integers(9))
        there = [o for o in objs if o.cell == cell]
        answer = f"a {there[0].colour} {there[0].shape}" if there else "nothing"
        return f"what is at {shapes.POSITIONS[cell]} ?", answer, image
    if task < 0.8:
        shape = str(rng.choice(shapes.SHAPES))
        n = sum(o.shape == shape for o in objs)
        return f"how many {shape}s ?", shapes.COUNT_WORDS.get(n, "zero"), image
    return "", scene.caption if rng.random() < 0.5 else shapes.describe(objs), None


def build_batch(tok, proc, rng: np.random.Generator, batch: int) -> dict[str, torch.Tensor]:
    ids = tok.convert_tokens_to_ids
    vs, ve, pad_img, eos = ids("<|vision_start|>"), ids("<|vision_end|>"), ids("<|image_pad|>"), tok.eos_token_id
    seqs, labels, types, images = [], [], [], []
    for _ in range(batch):
        question, answer, image = _example(rng)
        prefix = tok(question, add_special_tokens=False)["input_ids"] if question else []
        if image is not None:
            prefix = [vs] + [pad_img] * IMAGE_TOKENS + [ve] + prefix
            images.append(image)
        target = tok(answer, add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(prefix + target)
        labels.append([-100] * len(prefix) + target)
        types.append([1 if t == pad_img else 0 for t in prefix + target])
    n = max(len(s) for s in seqs)
    pad = lambda rows, v: torch.tensor([r + [v] * (n - len(r)) for r in rows])  # noqa: E731
    out = {
        "input_ids": pad(seqs, tok.pad_token_id),
        "labels": pad(labels, -100),
        "mm_token_type_ids": pad(types, 0),
        "attention_mask": pad([[1] * len(s) for s in seqs], 0),
    }
    if images:
        vis = proc(images=images, return_tensors="pt")
        out["pixel_values"], out["image_grid_thw"] = vis["pixel_values"], vis["image_grid_thw"]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Pre-train the tiny shapes-world planner (Qwen2.5-VL architecture).")
    ap.add_argument("--out", type=Path, required=True, help="planner folder to write (Qwen2.5-VL layout)")
    ap.add_argument("--run-dir", type=Path, required=True, help="resumable state and log")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model, tok = new_planner(args.seed)
    proc = image_processor()
    params = [p for p in model.parameters() if p.requires_grad]
    run = ResumableRun(args.run_dir, {"planner": model}, params, lr=args.lr, warmup=200, steps=args.steps,
                       seed=args.seed)
    run.run(lambda step, rng: {"loss": model(**build_batch(tok, proc, rng, args.batch)).loss})
    save_planner_folder(args.out, model.eval(), tok)
    print(f"planner written to {args.out} after {run.elapsed:.0f} s", flush=True)


if __name__ == "__main__":
    main()

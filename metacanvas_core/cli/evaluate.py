"""`evaluate`: score held-out benchmark prompts with the shapes-world detector."""

from __future__ import annotations

from pathlib import Path

from ..errors import MetaCanvasError
from ..limits import PROMPTS, SEED
from .options import common, emit, limited, models, pipeline, task_flag


def run(args) -> None:
    from ..evaluation import evaluate, evaluate_vae_round_trip

    if args.vae_round_trip:
        from ..backbones import load_backbone

        if args.canvas_only:
            raise MetaCanvasError(
                "evaluate: --vae-round-trip scores true renders (no DiT, no canvas); drop --canvas-only")
        backbone = args.backbone or models(args)[0]
        result = evaluate_vae_round_trip(load_backbone(backbone, device=args.device), args.task, n=args.n,
                                         seeds=tuple(args.seeds), split=args.split)
        result.update(task=args.task, method="true renders, VAE round trip")
    else:
        result = evaluate(pipeline(args), args.task, n=args.n, seeds=tuple(args.seeds), steps=args.steps,
                          cfg=args.cfg, canvas_only=args.canvas_only, split=args.split, sampler=args.sampler,
                          shift=args.shift)
        result.update(task=args.task, method=args.method)
    emit(result, args.json)


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="score held-out benchmark prompts with the shapes-world detector")
    task_flag(e, "whose benchmark: held-out scenes of its tiny world, the same for every method, scored by the world's "
                 "detector (i2v also reports the first frame's PSNR against the given image)")
    e.add_argument("--n", type=limited(PROMPTS), default=PROMPTS.default,
                   help="number of benchmark prompts (of --split)")
    e.add_argument("--seeds", type=limited(SEED), nargs="+", default=[0], help="one full pass per seed")
    e.add_argument("--canvas-only", action="store_true", help="empty text to the DiT; only the canvas steers")
    e.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="heldout: combinations never trained on (the benchmark); train: seen ones, to measure "
                        "what is memorised rather than composed")
    e.add_argument("--vae-round-trip", action="store_true",
                   help="score the true renders encoded and decoded by the backbone's VAE (the ceiling it leaves)")
    e.add_argument("--json", type=Path, help="write the scores here")
    common(e, sampling_options=True)
    e.set_defaults(func=run)

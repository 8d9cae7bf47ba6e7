"""`evaluate`: score held-out benchmark prompts with the shapes-world detector."""

from __future__ import annotations

from pathlib import Path

from ..errors import MetaCanvasError
from ..limits import PROMPTS, SEED
from .options import EDIT, TASK_MODELS, common, emit, limited, models, pipeline


def _evaluate_edit(args) -> dict:
    from ..evaluation import evaluate

    if args.vae_round_trip or args.canvas_only:
        raise MetaCanvasError("evaluate --task edit: --vae-round-trip and --canvas-only are --task t2i options")
    return evaluate(pipeline(args), EDIT, n=args.n, seeds=tuple(args.seeds), steps=args.steps, cfg=args.cfg,
                    split=args.split, sampler=args.sampler, shift=args.shift)


def _edit_table(results: list[dict]) -> str:
    from ..evaluation_edit import markdown_edit_table

    return markdown_edit_table(results)


# Tasks with a benchmark of their own: task -> (run it from the parsed flags, Markdown table of its results).
# Text-to-image and video (one `evaluation.Benchmark` each) take the path below.
TASK_EVALUATIONS = {EDIT: (_evaluate_edit, _edit_table)}


def run(args) -> None:
    from ..evaluation import evaluate, evaluate_vae_round_trip

    if args.task in TASK_EVALUATIONS:
        result = TASK_EVALUATIONS[args.task][0](args)
        result.update(task=args.task, method=args.method)
        emit(result, args.json)
        return
    if args.vae_round_trip:
        from ..backbones import load_backbone

        if args.canvas_only:
            raise MetaCanvasError(
                "evaluate: --vae-round-trip scores true renders (no DiT, no canvas); drop --canvas-only")
        backbone = args.backbone or models(args)[0]
        result = evaluate_vae_round_trip(load_backbone(backbone, device=args.device), args.task, n=args.n,
                                         seeds=tuple(args.seeds), split=args.split)
        result.update(task=args.task, method="true renders, VAE round trip")
        emit(result, args.json)
        return
    result = evaluate(pipeline(args), args.task, n=args.n, seeds=tuple(args.seeds), steps=args.steps, cfg=args.cfg,
                      canvas_only=args.canvas_only, split=args.split, sampler=args.sampler, shift=args.shift)
    result.update(task=args.task, method=args.method)
    emit(result, args.json)


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="score held-out benchmark prompts with the shapes-world detector")
    e.add_argument("--task", choices=tuple(TASK_MODELS), default="t2i",
                   help="t2i: the text-to-image benchmark; t2v / i2v: the clip benchmark (i2v starts from each clip's "
                        "true first frame and also reports its PSNR after the VAE round trip); edit: held-out edits "
                        "of the edit world (FLUX.1-Kontext); video-edit: held-out clip edits (overall, edit_correct, "
                        "preservation, per kind); in-context: held-out reference scenes (overall, reference_fidelity, "
                        "motion)")
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

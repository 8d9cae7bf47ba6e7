"""Command line: python -m metacanvas_core {generate, evaluate, bench, probe, table, train, export-dataset, cost} ...
(--help on each)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .builtin import CONTEXT_MODELS, EDIT_MODELS, PLANNER, T2I_MODELS, VIDEO_MODELS, BuiltinModels
from .errors import MetaCanvasError, MetaCanvasWarning
from .limits import CFG, FPS, FRAMES, HEIGHT, PROMPTS, SEED, SHIFT, STEPS, STRENGTH, UPSCALE, WIDTH, Limit
from .schedulers import DEFAULT_SAMPLER, SAMPLERS
from .video_tasks import IN_CONTEXT, VIDEO_EDIT
from .world.clips import SIZE as CLIP_SIZE

EDIT = "edit"
VIDEO_TASKS, CONTEXT_TASKS = ("t2v", "i2v"), (VIDEO_EDIT, IN_CONTEXT)
T2I_BENCH_PROMPT = "a red circle at top left and a blue square at bottom right"
VIDEO_BENCH_PROMPT = "a red circle moves from left to right and a yellow square at top left"


# --task -> its built-in models and what --backbone must be without them
TASK_MODELS: dict[str, tuple[BuiltinModels, str]] = {
    "t2i": (T2I_MODELS, "a SANA diffusers folder"),
    "t2v": (VIDEO_MODELS, "a Wan 2.2 diffusers folder"),
    "i2v": (VIDEO_MODELS, "a Wan 2.2 diffusers folder"),
    EDIT: (EDIT_MODELS, "a FLUX.1-Kontext diffusers folder"),
    VIDEO_EDIT: (CONTEXT_MODELS, "a Wan 2.2 folder made for it: its DiT takes latent x 2 + mask channels"),
    IN_CONTEXT: (CONTEXT_MODELS, "a Wan 2.2 folder made for it: its DiT takes latent x 2 + mask channels"),
}
METHODS = sorted({m for models, _ in TASK_MODELS.values() for m in models.files})


def _models(args) -> tuple:
    """--backbone and --weights, or the built-in ones of --task and --method for what they leave out."""
    task = getattr(args, "task", "t2i")
    if args.backbone is not None and args.weights is not None:
        return args.backbone, args.weights
    models, needs = TASK_MODELS[task]
    backbone, weights = models.get(args.method, task, needs)
    return args.backbone or backbone, args.weights or weights


def torch_image(pixels):
    """uint8 (H, W, 3) -> (1, H, W, 3) float in [0, 1] (ComfyUI's IMAGE)."""
    import torch

    return torch.from_numpy(pixels).float().div(255)[None]


def _pipeline(args):
    from .pipeline import MetaCanvasPipeline

    backbone, weights = _models(args)
    return MetaCanvasPipeline.from_pretrained(
        args.planner or PLANNER, backbone, weights, strength=getattr(args, "strength", 1.0), device=args.device,
    )


def cmd_generate(args) -> None:
    t0 = time.perf_counter()
    video = args.task in (*VIDEO_TASKS, *CONTEXT_TASKS)
    images = args.image or []
    if bool(images) != (args.task in ("i2v", EDIT, IN_CONTEXT)):
        raise MetaCanvasError("--image goes with --task i2v (the start frame), --task edit (the image to edit) or "
                              "--task in-context (the reference images), and each needs it")
    if len(images) > 1 and args.task != IN_CONTEXT:
        raise MetaCanvasError(f"--task {args.task} takes one --image; several are reference images of --task "
                              f"{IN_CONTEXT}")
    if (args.video is not None) != (args.task == VIDEO_EDIT):
        raise MetaCanvasError(f"--video (the source clip) goes with --task {VIDEO_EDIT}, which needs it")
    if video and args.canvas_preview:
        raise MetaCanvasError("--canvas-preview is for --task t2i; use the Preview Canvas node for keyframes")
    if not video and args.out.suffix.lower() != ".png":
        raise MetaCanvasError(f"--out {str(args.out)!r} must be a .png file name for --task {args.task}")
    size = CLIP_SIZE if video else WIDTH.default
    args.width_given, args.height_given = args.width, args.height
    args.width, args.height = args.width or size, args.height or size
    frames = args.frames if video else 1
    start = source = None
    if images and args.task != IN_CONTEXT:
        from .pixels import load_image

        image = load_image(images[0], "--image")
        start, source = (image, None) if args.task == "i2v" else (None, image)
    pipe = _pipeline(args)
    inputs = _video_task_inputs(args, pipe, images) if args.task in CONTEXT_TASKS else None
    if inputs is not None:
        args.width, args.height, frames = inputs.width, inputs.height, inputs.frames
    if args.empty_text:  # only the canvas would steer
        pipe.model.connector.require_canvas(
            "for --empty-text", "use --method metacanvas or MetaCanvas weights, or drop --empty-text"
        )
    result = pipe(
        args.prompt, negative_prompt=args.negative_prompt, width=args.width, height=args.height, frames=frames,
        start_image=start, source_image=source, video_inputs=inputs, steps=args.steps, cfg=args.cfg, seed=args.seed,
        text_prompt="" if args.empty_text else None, sampler=args.sampler, shift=args.shift,
    )
    if video:
        from .pixels import save_clip

        save_clip(result.images, args.out, args.fps, args.upscale)
        print(f"wrote {args.out} ({frames} frames of {args.width}x{args.height}, {args.steps} steps, seed "
              f"{args.seed}) in {time.perf_counter() - t0:.1f} s")
        return
    from .pixels import save_image

    save_image(result.images[0], args.out, args.upscale)
    if args.canvas_preview:
        from .preview import canvas_to_rgb

        save_image(canvas_to_rgb(result.plan, size=args.width * args.upscale)[0], args.canvas_preview)
    print(f"wrote {args.out} ({args.width}x{args.height}, {args.steps} steps, seed {args.seed}) "
          f"in {time.perf_counter() - t0:.1f} s")


def _video_task_inputs(args, pipe, images: list[Path]):
    """The planner's visuals and the DiT's conditioning of --task video-edit (--video) or in-context (--image ...)."""
    from .pixels import load_clip, load_image
    from .video_tasks import check_task_weights, in_context_inputs, video_edit_inputs

    bb = pipe.model.backbone
    most = check_task_weights(pipe.model.connector, args.task, "--weights")
    if args.task == IN_CONTEXT:
        refs = [load_image(p, "--image") for p in images]
        return in_context_inputs(bb, refs, args.width, args.height, args.frames, "--image", most)
    clip, fps = load_clip(args.video, "--video")
    inputs = video_edit_inputs(bb, clip, fps or args.fps, "--video")
    asked = (args.width_given or inputs.width, args.height_given or inputs.height)
    if asked != (inputs.width, inputs.height):
        raise MetaCanvasError(f"--width/--height {asked[0]}x{asked[1]} differ from the --video clip's "
                              f"{inputs.width}x{inputs.height}: an edit keeps the clip's size; drop them")
    return inputs


def _emit(result: dict, path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)


def _evaluate_edit(args) -> dict:
    from .evaluation import evaluate

    if args.vae_round_trip or args.canvas_only:
        raise MetaCanvasError("evaluate --task edit: --vae-round-trip and --canvas-only are --task t2i options")
    return evaluate(_pipeline(args), EDIT, n=args.n, seeds=tuple(args.seeds), steps=args.steps, cfg=args.cfg,
                    split=args.split, sampler=args.sampler, shift=args.shift)


def _edit_table(results: list[dict]) -> str:
    from .evaluation_edit import markdown_edit_table

    return markdown_edit_table(results)


# Tasks with a benchmark of their own: task -> (run it from the parsed flags, Markdown table of its results).
# Text-to-image and video (one `evaluation.Benchmark` each) take the path below.
TASK_EVALUATIONS = {EDIT: (_evaluate_edit, _edit_table)}


def cmd_evaluate(args) -> None:
    from .evaluation import evaluate, evaluate_vae_round_trip

    if args.task in TASK_EVALUATIONS:
        result = TASK_EVALUATIONS[args.task][0](args)
        result.update(task=args.task, method=args.method)
        _emit(result, args.json)
        return
    if args.vae_round_trip:
        from .backbones import load_backbone

        if args.canvas_only:
            raise MetaCanvasError(
                "evaluate: --vae-round-trip scores true renders (no DiT, no canvas); drop --canvas-only")
        backbone = args.backbone or _models(args)[0]
        result = evaluate_vae_round_trip(load_backbone(backbone, device=args.device), args.task, n=args.n,
                                         seeds=tuple(args.seeds), split=args.split)
        result.update(task=args.task, method="true renders, VAE round trip")
        _emit(result, args.json)
        return
    result = evaluate(_pipeline(args), args.task, n=args.n, seeds=tuple(args.seeds), steps=args.steps, cfg=args.cfg,
                      canvas_only=args.canvas_only, split=args.split, sampler=args.sampler, shift=args.shift)
    result.update(task=args.task, method=args.method)
    _emit(result, args.json)


def cmd_bench(args) -> None:
    from .bench import bench, bench_edit
    from .checkpoints import load_connector

    video = args.task in VIDEO_TASKS
    size = CLIP_SIZE if video else WIDTH.default
    width, height = args.width or size, args.height or size
    kw = dict(width=width, height=height, steps=args.steps, cfg=args.cfg, repeats=args.repeats)
    if args.task in CONTEXT_TASKS:  # the first held-out benchmark edit / reference scene, as evaluate builds it
        from .bench import bench_context
        from .evaluation import benchmark

        if args.image is not None:
            raise MetaCanvasError(f"bench --task {args.task} runs the first held-out benchmark scene: drop --image")
        pipe, spec = _pipeline(args), benchmark(args.task)
        scene = spec.scenes(1, "heldout")[0]
        result = bench_context(pipe, args.prompt or spec.prompt(scene), spec.given([scene], pipe)["video_inputs"],
                               steps=args.steps, cfg=args.cfg, repeats=args.repeats)
        result.update(task=args.task, method=args.method)
    elif args.task == EDIT:
        from .pixels import load_image
        from .world.edits import edit_benchmark, render_pair

        edit = edit_benchmark(1)[0]  # default: the first held-out benchmark edit
        source = load_image(args.image, "--image") if args.image else torch_image(render_pair(edit, width)[0])
        result = bench_edit(_pipeline(args), args.prompt or edit.instruction, source, **kw)
    else:
        if args.image is not None:
            raise MetaCanvasError("bench: --image (the source to edit) goes with --task edit")
        compare = list(args.compare or [])
        if args.compare is None and args.weights is None:  # the built-in ablations (keyframes), when shipped
            models = TASK_MODELS[args.task][0]
            shipped = models.shipped()
            compare = [shipped[m][1] for m in models.ablations if m in shipped and m != args.method]
        pipe = _pipeline(args)
        prompt = args.prompt or (VIDEO_BENCH_PROMPT if video else T2I_BENCH_PROMPT)
        result = bench(pipe, prompt, frames=args.frames if video else 1,
                       compare={Path(w).stem: load_connector(w) for w in compare}, **kw)
        result.update(task=args.task, method=args.method)
    _emit(result, args.json)



def cmd_probe(args) -> None:
    from .checkpoints import load_connector
    from .planner import Planner
    from .probe import probe_plan

    weights = args.weights or T2I_MODELS.get("metacanvas", "t2i", TASK_MODELS["t2i"][1])[1]
    result = probe_plan(Planner.from_pretrained(args.planner or PLANNER), load_connector(weights),
                        n_train=args.n_train, n_test=args.n_test)
    _emit(result, args.json)


def cmd_table(args) -> None:
    from .evaluation import markdown_clip_table, markdown_context_table, markdown_failures, markdown_table

    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise MetaCanvasError(f"table: no such result file {', '.join(missing)}; write one with `evaluate --json`")
    results = [json.loads(p.read_text()) for p in args.files]
    for task, (_, table) in TASK_EVALUATIONS.items():
        own = [r for r in results if r.get("task") == task and "scores" in r]
        if own:
            print(table(own) + "\n")
    evals = [r for r in results if "scores" in r and r.get("task", "t2i") == "t2i"]
    clips = [r for r in results if "scores" in r and r.get("task") in VIDEO_TASKS]
    if evals or not results:
        print(markdown_table(evals))
    if any("failures" in r for r in evals):
        print("\nWhy images fail (% of each category's prompts):\n")
        print(markdown_failures([r for r in evals if "failures" in r]))
    if clips:
        print(("\n" if evals else "") + markdown_clip_table(clips))
    contexts = [r for r in results if "scores" in r and r.get("task") in CONTEXT_TASKS]
    if contexts:
        print(("\n" if evals or clips else "") + markdown_context_table(contexts))
    for r in results:
        if "ratio" in r:
            plain = "plain Kontext (editing)" if r.get("task") == EDIT else "plain backbone"
            size = f"{r['width']}x{r['height']}" + (f"x{r['frames']} frames" if r.get("frames", 1) > 1 else "")
            print(f"\nsampling time MetaCanvas / {plain}: {r['ratio']:.2f}x ({r['steps']} steps, "
                  f"{size}, cfg {r['cfg']}); planner once: {1000 * r['planner_once_s']:.0f} ms; "
                  f"connector FLOPs per step: {100 * r['connector_flops_share']:.1f}% of the DiT's")
            for name, c in r.get("compare", {}).items():
                print(f"sampling time {r['keyframes']} keyframes / {c['keyframes']} ({name}): "
                      f"{c['metacanvas_vs_this']:.2f}x")


def _limited(limit: Limit):
    """An argparse type for a flag with the nodes' limits: out-of-range, NaN or inf is a usage error (exit 2)."""

    def parse(text: str):
        try:
            return limit.parse(text)
        except MetaCanvasError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = limit.name  # what argparse calls the type in its own messages
    parse.limit = limit  # for the tests that try every flag at its limits
    return parse


def _device(text: str) -> str:
    """A torch device this machine has (a usage error otherwise, not a traceback from deep inside a loader)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device ({e}); e.g. cpu or cuda") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    count = torch.cuda.device_count() if device.type == "cuda" else 1
    if not available.get(device.type, False) or (device.index or 0) >= count:
        raise argparse.ArgumentTypeError(f"device {text!r} is not available on this machine; use cpu")
    return text


def _png(text: str) -> Path:
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text!r} must be a .png file name")
    return Path(text)


def _common(p: argparse.ArgumentParser, steps: int = 20, sampling_options: bool = False) -> None:
    p.add_argument("--method", choices=METHODS, default="metacanvas",
                   help="which built-in weights: metacanvas (canvas planning), a global-conditioning baseline, or "
                        "(video) metacanvas-k1, one canvas broadcast over time")
    p.add_argument("--planner", type=Path, help="Qwen2.5-VL folder (default: the built-in tiny planner)")
    p.add_argument("--backbone", type=Path, help="diffusers pipeline folder: SANA, Wan 2.2 or FLUX.1-Kontext "
                                                 "(default: the built-in tiny one of the task and --method)")
    p.add_argument("--weights", type=Path, help="MetaCanvas .safetensors (default: built-in for --method)")
    p.add_argument("--steps", type=_limited(STEPS), default=steps, help="denoising steps (1-1000)")
    p.add_argument("--cfg", type=_limited(CFG), default=CFG.default,
                   help="classifier-free guidance scale (0-30; 1 = off)")
    if sampling_options:
        p.add_argument("--strength", type=_limited(STRENGTH), default=STRENGTH.default,
                       help="canvas strength (0-2; 0 = no canvas)")
        p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
                       help="the backbone folder's own scheduler, or flow-matching euler / dpmpp_2m")
        p.add_argument("--shift", type=_limited(SHIFT), default=SHIFT.default,
                       help="flow shift of --sampler euler or dpmpp_2m (0.01-100; 1 = none; more steps at high "
                            "noise above)")
    p.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cpu or cuda")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metacanvas_core", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="text-to-image (PNG) or text/image-to-video (GIF or PNG frames) from a prompt")
    g.add_argument("--task", choices=tuple(TASK_MODELS), default="t2i",
                   help="t2i; t2v or i2v (with --image) on the built-in tiny Wan weights of --method (when shipped) "
                        "or a Wan 2.2 --backbone with --weights for it; edit (with --image) on FLUX.1-Kontext: the "
                        "built-in edit weights, or --backbone and --weights; video-edit (with --video) and in-context "
                        "(with --image, one per reference) on a --backbone Wan folder made for them and --weights")
    g.add_argument("--prompt", required=True, help="e.g. 'a red circle at top left and a blue square at bottom right'")
    g.add_argument("--out", type=Path, required=True,
                   help="PNG to write (t2i); for clips a .gif, or any other path for a folder of PNG frames")
    g.add_argument("--image", type=Path, action="append",
                   help="start frame for --task i2v, the image to edit for --task edit, a reference image for --task "
                        "in-context (repeat for several, all one size) (RGB; other sizes are scaled to cover the "
                        "output and centre-cropped)")
    g.add_argument("--video", type=Path, help="--task video-edit: the source clip, an animated .gif or a folder of "
                                              "frames (its size and frame count are the output's)")
    g.add_argument("--frames", type=_limited(FRAMES), default=FRAMES.default,
                   help="clip length, 4k+1 frames (t2v, i2v)")
    g.add_argument("--fps", type=_limited(FPS), default=FPS.default, help="frame rate of a written .gif (1-120)")
    g.add_argument("--negative-prompt", default="", help="the unconditional plan's prompt (default empty)")
    g.add_argument("--seed", type=_limited(SEED), default=0, help="noise seed (0 to 2**64-1)")
    g.add_argument("--width", type=_limited(WIDTH), help="pixels (4-8192; default 32, the tiny worlds' size)")
    g.add_argument("--height", type=_limited(HEIGHT), help="pixels (4-8192; default 32, the tiny worlds' size)")
    g.add_argument("--empty-text", action="store_true", help="give the DiT no text: the canvas alone steers")
    g.add_argument("--upscale", type=_limited(UPSCALE), default=UPSCALE.default,
                   help="nearest-neighbour upscale of what is written, for viewing (1-64; default 8)")
    g.add_argument("--canvas-preview", type=_png, help="also write the plan (PCA of the canvas) as PNG")
    _common(g, sampling_options=True)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="score held-out benchmark prompts with the shapes-world detector")
    e.add_argument("--task", choices=tuple(TASK_MODELS), default="t2i",
                   help="t2i: the text-to-image benchmark; t2v / i2v: the clip benchmark (i2v starts from each clip's "
                        "true first frame and also reports its PSNR after the VAE round trip); edit: held-out edits "
                        "of the edit world (FLUX.1-Kontext); video-edit: held-out clip edits (overall, edit_correct, "
                        "preservation, per kind); in-context: held-out reference scenes (overall, reference_fidelity, "
                        "motion)")
    e.add_argument("--n", type=_limited(PROMPTS), default=PROMPTS.default,
                   help="number of benchmark prompts (of --split)")
    e.add_argument("--seeds", type=_limited(SEED), nargs="+", default=[0], help="one full pass per seed")
    e.add_argument("--canvas-only", action="store_true", help="empty text to the DiT; only the canvas steers")
    e.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="heldout: combinations never trained on (the benchmark); train: seen ones, to measure "
                        "what is memorised rather than composed")
    e.add_argument("--vae-round-trip", action="store_true",
                   help="score the true renders encoded and decoded by the backbone's VAE (the ceiling it leaves)")
    e.add_argument("--json", type=Path, help="write the scores here")
    _common(e, sampling_options=True)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="time plain vs MetaCanvas sampling side by side in one run")
    b.add_argument("--task", choices=tuple(TASK_MODELS), default="t2i",
                   help="t2i times images; t2v / i2v time clips (and the 1-keyframe weights); edit: plain Kontext "
                        "sampling vs Kontext with the canvas, on --image; video-edit / in-context: the widened Wan "
                        "with the first held-out benchmark clip edit / reference scene")
    b.add_argument("--prompt", help=f"default: '{T2I_BENCH_PROMPT}' (t2i), '{VIDEO_BENCH_PROMPT}' (t2v, i2v), the "
                                    "first held-out benchmark edit's instruction (edit, video-edit) or reference "
                                    "prompt (in-context)")
    b.add_argument("--image", type=Path, help="--task edit: the image to edit (default: that edit's source)")
    b.add_argument("--width", type=_limited(WIDTH), help="pixels (4-8192; default 32, the tiny worlds' size)")
    b.add_argument("--height", type=_limited(HEIGHT), help="pixels (4-8192; default 32, the tiny worlds' size)")
    b.add_argument("--frames", type=_limited(FRAMES), default=FRAMES.default,
                   help="clip length, 4k+1 frames (t2v, i2v)")
    b.add_argument("--compare", type=Path, nargs="*",
                   help="other MetaCanvas weights for the same backbone, timed in the same rounds (default for "
                        "t2v/i2v: the built-in 1-keyframe weights, when shipped)")
    b.add_argument("--repeats", type=int, default=11, help="timed runs of each, after one warm-up (median)")
    b.add_argument("--json", type=Path, help="write the figures here")
    _common(b)
    b.set_defaults(func=cmd_bench)

    pr = sub.add_parser("probe", help="linear probe: does the canvas know which colour and shape sit in which cell?")
    pr.add_argument("--planner", type=Path, help="Qwen2.5-VL folder (default: the built-in tiny planner)")
    pr.add_argument("--weights", type=Path, help="MetaCanvas .safetensors (default: the built-in metacanvas weights)")
    pr.add_argument("--n-train", type=int, default=2000, help="training-split position prompts to fit on")
    pr.add_argument("--n-test", type=int, default=500, help="held-out position prompts to score")
    pr.add_argument("--json", type=Path, help="write the accuracies here")
    pr.set_defaults(func=cmd_probe)

    tb = sub.add_parser("table", help="Markdown table from evaluate/bench JSON files")
    tb.add_argument("files", type=Path, nargs="+")
    tb.set_defaults(func=cmd_table)

    from .training.cli import register as register_training

    register_training(sub)

    args = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", MetaCanvasWarning)  # every run's notice, not only the first of a session
        warnings.showwarning = _show_warning
        try:
            args.func(args)
        except MetaCanvasError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # an output path that cannot be written, a full disk
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MetaCanvasWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    sys.exit(main())

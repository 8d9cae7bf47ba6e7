"""`bench`: time plain vs MetaCanvas sampling side by side in one run."""

from __future__ import annotations

from pathlib import Path

from ..errors import MetaCanvasError
from ..limits import FRAMES, HEIGHT, WIDTH
from ..world.clips import SIZE as CLIP_SIZE
from .options import CONTEXT_TASKS, EDIT, TASK_MODELS, VIDEO_TASKS, common, emit, limited, pipeline, torch_image


T2I_BENCH_PROMPT = "a red circle at top left and a blue square at bottom right"
VIDEO_BENCH_PROMPT = "a red circle moves from left to right and a yellow square at top left"


def run(args) -> None:
    from ..sampling_cost import bench, bench_edit
    from ..checkpoints import load_connector

    video = args.task in VIDEO_TASKS
    size = CLIP_SIZE if video else WIDTH.default
    width, height = args.width or size, args.height or size
    kw = dict(width=width, height=height, steps=args.steps, cfg=args.cfg, repeats=args.repeats)
    if args.task in CONTEXT_TASKS:  # the first held-out benchmark edit / reference scene, as evaluate builds it
        from ..sampling_cost import bench_context
        from ..evaluation import benchmark

        if args.image is not None:
            raise MetaCanvasError(f"bench --task {args.task} runs the first held-out benchmark scene: drop --image")
        pipe, spec = pipeline(args), benchmark(args.task)
        scene = spec.scenes(1, "heldout")[0]
        result = bench_context(pipe, args.prompt or spec.prompt(scene), spec.given([scene], pipe)["video_inputs"],
                               steps=args.steps, cfg=args.cfg, repeats=args.repeats)
        result.update(task=args.task, method=args.method)
    elif args.task == EDIT:
        from ..pixels import load_image
        from ..world.edits import edit_benchmark, render_pair

        edit = edit_benchmark(1)[0]  # default: the first held-out benchmark edit
        source = load_image(args.image, "--image") if args.image else torch_image(render_pair(edit, width)[0])
        result = bench_edit(pipeline(args), args.prompt or edit.instruction, source, **kw)
    else:
        if args.image is not None:
            raise MetaCanvasError("bench: --image (the source to edit) goes with --task edit")
        compare = list(args.compare or [])
        if args.compare is None and args.weights is None:  # the built-in ablations (keyframes), when shipped
            models = TASK_MODELS[args.task][0]
            shipped = models.shipped()
            compare = [shipped[m][1] for m in models.ablations if m in shipped and m != args.method]
        pipe = pipeline(args)
        prompt = args.prompt or (VIDEO_BENCH_PROMPT if video else T2I_BENCH_PROMPT)
        result = bench(pipe, prompt, frames=args.frames if video else 1,
                       compare={Path(w).stem: load_connector(w) for w in compare}, **kw)
        result.update(task=args.task, method=args.method)
    emit(result, args.json)


def register(sub) -> None:
    b = sub.add_parser("bench", help="time plain vs MetaCanvas sampling side by side in one run")
    b.add_argument("--task", choices=tuple(TASK_MODELS), default="t2i",
                   help="t2i times images; t2v / i2v time clips (and the 1-keyframe weights); edit: plain Kontext "
                        "sampling vs Kontext with the canvas, on --image; video-edit / in-context: the widened Wan "
                        "with the first held-out benchmark clip edit / reference scene")
    b.add_argument("--prompt", help=f"default: '{T2I_BENCH_PROMPT}' (t2i), '{VIDEO_BENCH_PROMPT}' (t2v, i2v), the "
                                    "first held-out benchmark edit's instruction (edit, video-edit) or reference "
                                    "prompt (in-context)")
    b.add_argument("--image", type=Path, help="--task edit: the image to edit (default: that edit's source)")
    b.add_argument("--width", type=limited(WIDTH), help="pixels (4-8192; default 32, the tiny worlds' size)")
    b.add_argument("--height", type=limited(HEIGHT), help="pixels (4-8192; default 32, the tiny worlds' size)")
    b.add_argument("--frames", type=limited(FRAMES), default=FRAMES.default,
                   help="clip length, 4k+1 frames (t2v, i2v)")
    b.add_argument("--compare", type=Path, nargs="*",
                   help="other MetaCanvas weights for the same backbone, timed in the same rounds (default for "
                        "t2v/i2v: the built-in 1-keyframe weights, when shipped)")
    b.add_argument("--repeats", type=int, default=11, help="timed runs of each, after one warm-up (median)")
    b.add_argument("--json", type=Path, help="write the figures here")
    common(b)
    b.set_defaults(func=run)

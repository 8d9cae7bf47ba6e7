"""`bench`: time plain vs MetaCanvas sampling side by side in one run, for any task."""

from __future__ import annotations

from pathlib import Path

from ..limits import FPS, FRAMES, HEIGHT, WIDTH
from ..tasks import task
from .options import common, emit, given_input, limited, models, pipeline, task_flag


def run(args) -> None:
    from ..checkpoints import load_connector
    from ..sampling_cost import bench

    definition = task(args.task)
    found = models(args)  # a missing built-in is named before any file is read
    given, fps = given_input(args, definition, required=False)
    pipe = pipeline(args, found)
    spec = definition.benchmark
    scene = spec.scenes(1, "heldout")[0]  # what bench runs on unless given
    if given is None:
        given = spec.given([scene])
    prompt = args.prompt or (spec.prompt(scene) if definition.given else definition.example_prompt)
    where = None if definition.given is None else definition.given.flag
    inputs = definition.inputs(pipe.model.backbone, given, width=args.width, height=args.height, frames=args.frames,
                               fps=fps or FPS.default, weights=pipe.model.connector, where=where)
    compare = list(args.compare or [])
    if args.compare is None and args.weights is None:  # the built-in ablations (keyframes), when shipped
        shipped = definition.models.shipped()
        compare = [shipped[m][1] for m in definition.models.ablations if m in shipped and m != args.method]
    result = bench(pipe, prompt, inputs, steps=args.steps, cfg=args.cfg, repeats=args.repeats,
                   compare={Path(w).stem: load_connector(w) for w in compare})
    result.update(task=args.task, method=args.method)
    emit(result, args.json)


def register(sub) -> None:
    b = sub.add_parser("bench", help="time plain vs MetaCanvas sampling side by side in one run")
    task_flag(b, "what to time: the same sampling run with and without the canvas, on the task's input")
    b.add_argument("--prompt", help="default: the task's example prompt, or for a task with an input the first "
                                    "held-out benchmark scene's prompt (which goes with its input)")
    b.add_argument("--image", type=Path, action="append",
                   help="the task's input image(s) (default: the first held-out benchmark scene's)")
    b.add_argument("--video", type=Path, help="--task video-edit: the source clip (default: the first held-out "
                                              "benchmark clip edit's)")
    b.add_argument("--width", type=limited(WIDTH), help="pixels (4-8192; default 32, the tiny worlds' size)")
    b.add_argument("--height", type=limited(HEIGHT), help="pixels (4-8192; default 32, the tiny worlds' size)")
    b.add_argument("--frames", type=limited(FRAMES), help="clip length, 4k+1 frames (default 17, the tiny clips')")
    b.add_argument("--compare", type=Path, nargs="*",
                   help="other MetaCanvas weights for the same backbone, timed in the same rounds (default: the "
                        "task's built-in ablations, when shipped: for t2v/i2v the 1-keyframe weights)")
    b.add_argument("--repeats", type=int, default=11, help="timed runs of each, after one warm-up (median)")
    b.add_argument("--json", type=Path, help="write the figures here")
    common(b)
    b.set_defaults(func=run)

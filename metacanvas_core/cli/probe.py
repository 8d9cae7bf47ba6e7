"""`probe`: a linear probe of whether the canvas knows which colour and shape sit in which cell."""

from __future__ import annotations

from pathlib import Path

from ..builtin import PLANNER
from ..tasks import task
from .options import emit


def run(args) -> None:
    from ..canvas_probe import probe_plan
    from ..checkpoints import load_connector
    from ..planner import Planner

    weights = args.weights or task("t2i").builtin("metacanvas")[1]
    result = probe_plan(Planner.from_pretrained(args.planner or PLANNER), load_connector(weights),
                        n_train=args.n_train, n_test=args.n_test)
    emit(result, args.json)


def register(sub) -> None:
    pr = sub.add_parser("probe", help="linear probe: does the canvas know which colour and shape sit in which cell?")
    pr.add_argument("--planner", type=Path, help="Qwen2.5-VL folder (default: the built-in tiny planner)")
    pr.add_argument("--weights", type=Path, help="MetaCanvas weights, a .safetensors file (default: the built-in "
                                                 "text-to-image metacanvas ones)")
    pr.add_argument("--n-train", type=int, default=2000, help="training-split position prompts to fit on")
    pr.add_argument("--n-test", type=int, default=500, help="held-out position prompts to score")
    pr.add_argument("--json", type=Path, help="write the accuracies here")
    pr.set_defaults(func=run)

"""What the subcommands share: flag types with the nodes' limits, the common model and sampling flags, the models
they name (the built-in ones of --task and --method unless given), the task's input from --image / --video, and
writing a result as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..builtin import PLANNER
from ..errors import MetaCanvasError
from ..limits import CFG, SHIFT, STEPS, STRENGTH, Limit
from ..schedulers import DEFAULT_SAMPLER, SAMPLERS
from ..tasks import TASKS, TaskDefinition, task

METHODS = sorted({m for t in TASKS.values() for m in t.models.files})


def models(args) -> tuple[Path, Path]:
    """--backbone and --weights, or the built-in ones of --task and --method for what they leave out."""
    if args.backbone is not None and args.weights is not None:
        return args.backbone, args.weights
    backbone, weights = task(args.task).builtin(args.method)
    return args.backbone or backbone, args.weights or weights


def pipeline(args, found: tuple[Path, Path] | None = None):
    """The pipeline of --planner and the models of `models(args)` (or `found`, already looked up)."""
    from ..pipeline import MetaCanvasPipeline

    backbone, weights = found or models(args)
    return MetaCanvasPipeline.from_pretrained(
        args.planner or PLANNER, backbone, weights, strength=getattr(args, "strength", 1.0), device=args.device,
    )


def given_input(args, definition: TaskDefinition, required: bool = True) -> tuple[object, float | None]:
    """The task's input from --image (repeated for several references) or --video, and a clip's own frame rate
    (None: not recorded, or no clip); (None, None) where the task takes none, or it is left out and not required."""
    from ..pixels import load_clip, load_image

    files = {"--image": getattr(args, "image", None) or [], "--video": [args.video] if getattr(args, "video", None)
             else []}
    wanted = None if definition.given is None else definition.given.flag
    for flag, paths in files.items():
        if paths and flag != wanted:
            takers = [f"--task {t.name} ({t.given.what})" for t in TASKS.values() if t.given and t.given.flag == flag]
            raise MetaCanvasError(f"{flag} goes with {' or '.join(takers)}, not --task {definition.name}")
    paths = files.get(wanted, [])
    if not paths:
        if required and definition.given is not None:
            raise MetaCanvasError(f"--task {definition.name} needs {wanted} ({definition.given.what})")
        return None, None
    if wanted == "--video":
        return load_clip(paths[0], wanted)
    if len(paths) > 1 and not definition.given.several:
        raise MetaCanvasError(f"--task {definition.name} takes one {wanted} ({definition.given.what}), not "
                              f"{len(paths)}")
    images = [load_image(p, wanted) for p in paths]
    return (images if definition.given.several else images[0]), None


def task_flag(p: argparse.ArgumentParser, does: str) -> None:
    """--task, its help listing every task: what `does` with it, on which backbone, from which input."""
    tasks = "; ".join(f"{t.name}: {t.title} on {t.backbone}" + (f", from {t.given.flag} (the {t.given.what})"
                                                                  if t.given else "") for t in TASKS.values())
    p.add_argument("--task", choices=tuple(TASKS), default="t2i", help=f"{does} ({tasks})")


def emit(result: dict, path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)


def limited(limit: Limit):
    """An argparse type for a flag with the nodes' limits: out-of-range, NaN or inf is a usage error (exit 2)."""

    def parse(text: str):
        try:
            return limit.parse(text)
        except MetaCanvasError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = limit.name  # what argparse calls the type in its own messages
    parse.limit = limit  # for the tests that try every flag at its limits
    return parse


def device(text: str) -> str:
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


def png(text: str) -> Path:
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text!r} must be a .png file name")
    return Path(text)


def common(p: argparse.ArgumentParser, steps: int = 20, sampling_options: bool = False) -> None:
    p.add_argument("--method", choices=METHODS, default="metacanvas",
                   help="which built-in weights: metacanvas (canvas planning), a global-conditioning baseline, or "
                        "(video) metacanvas-k1, one canvas broadcast over time")
    p.add_argument("--planner", type=Path, help="Qwen2.5-VL folder (default: the built-in tiny planner)")
    p.add_argument("--backbone", type=Path, help="diffusers pipeline folder: SANA, Wan 2.2 or FLUX.1-Kontext "
                                                 "(default: the built-in tiny one of --task and --method)")
    p.add_argument("--weights", type=Path,
                   help="MetaCanvas weights, a .safetensors file (default: the built-in ones of --task and --method)")
    p.add_argument("--steps", type=limited(STEPS), default=steps, help="denoising steps (1-1000)")
    p.add_argument("--cfg", type=limited(CFG), default=CFG.default,
                   help="classifier-free guidance scale (0-30; 1 = off)")
    if sampling_options:
        p.add_argument("--strength", type=limited(STRENGTH), default=STRENGTH.default,
                       help="canvas strength (0-2; 0 = no canvas)")
        p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
                       help="the backbone folder's own scheduler, or flow-matching euler / dpmpp_2m")
        p.add_argument("--shift", type=limited(SHIFT), default=SHIFT.default,
                       help="flow shift of --sampler euler or dpmpp_2m (0.01-100; 1 = none; more steps at high "
                            "noise above)")
    p.add_argument("--device", type=device, default="cpu", help="torch device, e.g. cpu or cuda")

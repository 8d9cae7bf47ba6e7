"""What the subcommands share: flag types with the nodes' limits, the common model and sampling flags, the
pipeline they name, and writing a result as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..builtin import CONTEXT_MODELS, EDIT_MODELS, PLANNER, T2I_MODELS, VIDEO_MODELS, BuiltinModels
from ..errors import MetaCanvasError
from ..limits import CFG, SHIFT, STEPS, STRENGTH, Limit
from ..schedulers import DEFAULT_SAMPLER, SAMPLERS
from ..video_tasks import IN_CONTEXT, VIDEO_EDIT


EDIT = "edit"
VIDEO_TASKS = ("t2v", "i2v")
CONTEXT_TASKS = (VIDEO_EDIT, IN_CONTEXT)


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


def models(args) -> tuple:
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


def pipeline(args):
    from ..pipeline import MetaCanvasPipeline

    backbone, weights = models(args)
    return MetaCanvasPipeline.from_pretrained(
        args.planner or PLANNER, backbone, weights, strength=getattr(args, "strength", 1.0), device=args.device,
    )


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
                                                 "(default: the built-in tiny one of the task and --method)")
    p.add_argument("--weights", type=Path, help="MetaCanvas .safetensors (default: built-in for --method)")
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

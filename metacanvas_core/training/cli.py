"""The `train`, `export-dataset` and `cost` subcommands of `python -m metacanvas_core`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ..errors import MetaCanvasError
from .tasks.base import Task

# Task name -> (module, class): imported only when that task runs (accelerate and peft are the `train` extra).
TASKS = {"t2i": ("t2i", "TextToImage"), "planner": ("planner", "PlannerPretraining"), "vae": ("vae", "VaePretraining"),
         "edit": ("edit", "ImageEditing"), "vae-kontext": ("edit", "KontextVaePretraining"),
         "video": ("video", "TextToVideo"), "vae-wan": ("wan_vae", "WanVaePretraining"),
         "video-context": ("video_context", "VideoContext")}
DEFAULTS = {  # steps, batch, lr, warm-up: the shipped recipes
    "t2i": (6000, 32, 5e-4, 200), "planner": (3000, 32, 1e-3, 200), "vae": (2000, 32, 1e-3, 100),
    "edit": (6000, 32, 5e-4, 200), "vae-kontext": (2000, 32, 1e-3, 100),
    "video": (900, 8, 1e-3, 50), "vae-wan": (900, 8, 1e-3, 30), "video-context": (300, 8, 3e-4, 20)}
TASK_HELP = {"t2i": "text-to-image: canvas tokens, connectors and the DiT (full or LoRA) on shapes or your images",
             "planner": "tiny world: pre-train the tiny Qwen2.5-VL planner on shapes-world questions and captions",
             "vae": "tiny world: train the tiny AutoencoderDC on shapes-world images",
             "edit": "image editing on FLUX.1-Kontext: edit-world triples, the planner sees the source image",
             "vae-kontext": "tiny world: train the tiny Kontext AutoencoderKL on edit-world images (shift, scale)",
             "video": "text- and image-to-video on Wan 2.2 TI2V: clip-world clips, the planner sees the start frame",
             "vae-wan": "tiny world: train the tiny AutoencoderKLWan on clip-world clips (measured latent stats)",
             "video-context": "video editing + in-context video on a widened Wan (from the t2v backbone): the "
                              "planner sees the source clip or the reference images"}


def task_class(name: str) -> type[Task]:
    import importlib

    module, cls = TASKS[name]
    return getattr(importlib.import_module(f"{__package__}.tasks.{module}"), cls)


def train_parser(name: str) -> argparse.ArgumentParser:
    from .trainer import add_common_arguments

    ap = argparse.ArgumentParser(prog=f"python -m metacanvas_core train {name}", description=TASK_HELP[name])
    task_class(name).add_arguments(ap)
    add_common_arguments(ap, *DEFAULTS[name])
    return ap


def cmd_train(args: argparse.Namespace) -> None:
    from .trainer import check_arguments, train

    ap = train_parser(args.task)
    targs = ap.parse_args(args.rest)
    check_arguments(ap, targs)
    if targs.validation_prompt and not task_class(args.task).validates:
        ap.error(f"--validation-prompt samples canvas-DiT tasks (t2i, edit, video, video-context); train "
                 f"{args.task} has no sampling")
    task_class(args.task).check_arguments(ap, targs)
    train(task_class(args.task), targs)


def _export_images(args: argparse.Namespace) -> Path:
    from .data import export_shapes

    return export_shapes(args.out, args.n, args.seed, args.resolution, args.format)


def _export_world(layout: str) -> Callable[[argparse.Namespace], Path]:
    def export(args: argparse.Namespace) -> Path:
        from .datasets import write_dataset, world_samples
        from ..world import clips

        if args.resolution != 32:
            raise MetaCanvasError(f"export-dataset --task {args.task}: the built-in worlds are 32x32; drop --resolution")
        return write_dataset(args.out, layout, world_samples(layout, args.n, args.seed), args.format, clips.FPS,
                             args.video_format)
    return export


# export-dataset's tasks -> how their built-in world is written (text- and image-to-video share the clip layout).
EXPORTERS = {"t2i": _export_images, "t2v": _export_world("t2v"), "i2v": _export_world("t2v"),
             "edit": _export_world("edit"), "video-edit": _export_world("video-edit"),
             "in-context": _export_world("in-context")}


def cmd_export_dataset(args: argparse.Namespace) -> None:
    where = EXPORTERS[args.task](args)
    print(f"wrote {args.n} {args.task} samples of the built-in world to {where}")


def cmd_cost(args: argparse.Namespace) -> None:
    from .cost import BY_KEY, Recipe, cost_table, markdown, recommended
    from .tasks.canvas_dit import canvas_grid_size

    canvas = {}
    for item in args.canvas_grid or []:
        key, _, grid = item.partition("=")
        if key not in BY_KEY or not grid:
            raise MetaCanvasError(f"cost --canvas-grid {item!r}: give BACKBONE=ROWSxCOLS, BACKBONE one of "
                                  f"{', '.join(BY_KEY)} (e.g. wan=11x20)")
        canvas[key] = canvas_grid_size(grid)
    base = Recipe(precision=args.mixed_precision, batch=args.batch, gpus=args.gpus, sharding=args.sharding)
    rows = cost_table(args.configs, args.lora_rank, base, canvas)
    rec = recommended(args.configs) if args.recommended else None
    print(json.dumps({"rows": rows, "recommended": rec}, indent=2) if args.json else markdown(rows, rec, base))


def _serves(name: str) -> str:
    """Which sampling tasks (their definitions in `tasks.py` name their trainer task) the weights of `name` serve."""
    from ..tasks import TASKS as SAMPLING_TASKS

    served = [t.name for t in SAMPLING_TASKS.values() if t.training_task == name]
    return f" (the weights of --task {', '.join(served)})" if served else ""


def register(sub) -> None:
    """Add the subcommands to `python -m metacanvas_core`'s subparsers."""
    t = sub.add_parser("train", help="train a task on accelerate (also under `accelerate launch -m metacanvas_core`)",
                       description="python -m metacanvas_core train TASK --help lists a task's flags")
    t.add_argument("task", choices=sorted(TASKS), help="; ".join(f"{k}: {v}{_serves(k)}" for k, v in TASK_HELP.items()))
    t.add_argument("rest", nargs=argparse.REMAINDER, help="the task's and trainer's flags")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export-dataset", help="write the built-in world's training samples in a task's data layout "
                                              "(what `train ... --data` reads)")
    e.add_argument("--task", choices=tuple(EXPORTERS), default="t2i",
                   help="t2i: images + text; t2v/i2v: clips + text; edit: source, target, instruction; video-edit: "
                        "source and target clips, instruction; in-context: references, clip, text")
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--format", choices=("folder", "tar"), default="folder",
                   help="folder: images + metadata.jsonl (imagefolder); tar: one webdataset shard")
    e.add_argument("--resolution", type=int, default=32)
    e.add_argument("--video-format", choices=("mp4", "gif", "frames"), default="mp4",
                   help="how clips are written: mp4 (lossless H.264, needs PyAV), gif, or folders of PNG frames "
                        "(folder format only)")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_export_dataset)

    c = sub.add_parser("cost", help="estimated per-GPU memory and time per training step of each real backbone",
                       description="Per GPU: the frozen planner and VAE (never sharded), the frozen DiT under a LoRA, "
                                   "the trained parameters with their gradients and AdamW moments, activations; for "
                                   "the full DiT and a LoRA, with and without gradient checkpointing. ESTIMATES: the "
                                   "assumptions are listed in metacanvas_core/training/cost.py.")
    c.add_argument("--configs", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared"
                   / "reference-configs", help="folder of the real models' configs (../shared/reference-configs)")
    c.add_argument("--lora-rank", type=int, default=64, help="DiT LoRA rank for the LoRA rows")
    c.add_argument("--mixed-precision", choices=("bf16", "fp16", "no"), default="bf16",
                   help="the run's precision: frozen models and activations in it (no = fp32)")
    c.add_argument("--batch", type=int, default=1, help="samples per GPU per micro-batch")
    c.add_argument("--gpus", type=int, default=1, help="GPUs the sharding divides over")
    c.add_argument("--sharding", choices=("ddp", "zero2", "zero3", "fsdp"), default="ddp",
                   help="ddp: nothing sharded; zero2: gradients + AdamW moments; zero3 / fsdp: also the wrapped "
                        "DiT's weights (the planner and VAE are never sharded)")
    c.add_argument("--canvas-grid", action="append", metavar="BACKBONE=ROWSxCOLS",
                   help="a backbone's canvas (sana, flux, wan; default: its token grid, the trainer's default), "
                        "e.g. --canvas-grid wan=11x20 (repeatable)")
    c.add_argument("--recommended", action="store_true",
                   help="also the recommended recipe of each backbone (bf16, LoRA r64, checkpointing, one GPU)")
    c.add_argument("--json", action="store_true", help="JSON instead of Markdown tables")
    c.set_defaults(func=cmd_cost)

"""What scripts/gpu_smoke.sh runs: replicas of the real checkpoints' layouts at reduced depth, data in every task's
layout, and a measured wrapper around `python -m metacanvas_core` commands.

    python -m metacanvas_core.training.smoke run --out DIR --device cuda|cpu [--steps 3]   all of it, measured
    python -m metacanvas_core.training.smoke build --out DIR --scale gpu|cpu   replicas + datasets + inputs only

`run` trains and samples in one process, one command after another (on a GPU the peak memory is reset before
each; on the CPU the figure is the process's peak so far).

Replicas are written from the real configs (../shared/reference-configs: Qwen2.5-VL-7B, SANA 1600M,
FLUX.1-Kontext-dev, Wan2.2-TI2V-5B) with the real classes and folder layouts. `gpu`: the real widths, vocabulary and
VAEs, the transformers cut to 1-2 blocks (the planner, SANA and Wan to 2 layers, FLUX to 1 double + 1 single
block); `cpu`: every size made tiny as well. Untrained: a smoke run checks that training and sampling go through
and what they cost, not what they make. Datasets: the built-in worlds' samples, enlarged (nearest neighbour) to the
scale's resolution, written with export-dataset's writer.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REF = Path(__file__).resolve().parents[3] / "shared" / "reference-configs"
QWEN, SANA = "Qwen--Qwen2.5-VL-7B-Instruct", "Efficient-Large-Model--Sana_1600M_512px_diffusers"
FLUX, WAN = "black-forest-labs--FLUX.1-Kontext-dev", "Wan-AI--Wan2.2-TI2V-5B-Diffusers"

# Per scale: config overrides of each part (on top of the real config) and the training sizes.
SCALES = {
    "gpu": {
        "planner": {"num_hidden_layers": 2, "max_window_layers": 2},
        "vision": {"depth": 2, "fullatt_block_indexes": [1]},
        "sana": {"num_layers": 2}, "sana_vae": {},
        "flux": {"num_layers": 1, "num_single_layers": 1}, "flux_vae": {},
        "wan": {"num_layers": 2}, "wan_vae": {},
        "image": 512, "clip": 256, "frames": 17,
    },
    "cpu": {
        "planner": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "num_key_value_heads": 1, "max_window_layers": 2, "max_position_embeddings": 4096,
                    "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}},
        "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                   "fullatt_block_indexes": [1]},
        "sana": {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2, "num_cross_attention_heads": 2,
                 "cross_attention_head_dim": 16, "cross_attention_dim": 32, "caption_channels": 48, "in_channels": 8,
                 "out_channels": 8, "sample_size": 16},
        "sana_vae": {"encoder_block_out_channels": [8, 16], "decoder_block_out_channels": [8, 16],
                     "encoder_block_types": ["ResBlock", "EfficientViTBlock"],
                     "decoder_block_types": ["ResBlock", "EfficientViTBlock"], "encoder_layers_per_block": [1, 1],
                     "decoder_layers_per_block": [1, 1], "encoder_qkv_multiscales": [[], [5]],
                     "decoder_qkv_multiscales": [[], [5]], "latent_channels": 8, "attention_head_dim": 8},
        "flux": {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
                 "axes_dims_rope": [4, 6, 6], "in_channels": 16, "joint_attention_dim": 32,
                 "pooled_projection_dim": 32},
        "flux_vae": {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
                     "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "latent_channels": 4,
                     "norm_num_groups": 4, "sample_size": 32},
        "wan": {"num_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2, "ffn_dim": 128, "text_dim": 32},
        "wan_vae": {"base_dim": 8, "decoder_base_dim": 8, "dim_mult": [1, 2, 2], "num_res_blocks": 1,
                    "temperal_downsample": [True, True], "scale_factor_spatial": 8},
        "image": 32, "clip": 32, "frames": 17,
    },
}


def _read(folder: Path, part: str) -> dict:
    found = sorted((REF / folder / part).glob("*.json"))
    return {k: v for k, v in json.loads(found[0].read_text()).items() if not k.startswith("_")}


def _planner(out: Path, scale: dict) -> None:
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from ..world.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = json.loads((REF / QWEN / "config.json").read_text())  # the released flat layout
    ids = tok.convert_tokens_to_ids
    cfg.update(scale["planner"])
    cfg.update(bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
               vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
               vision_token_id=ids("<|vision_pad|>"), image_token_id=ids("<|image_pad|>"),
               video_token_id=ids("<|video_pad|>"))
    if "hidden_size" in scale["planner"]:
        cfg["vocab_size"] = len(tok)
    cfg["vision_config"].update(scale["vision"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg))
    model = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(out))
    if scale is SCALES["gpu"]:  # 1.6 B parameters: written in bf16, as released (loaded in the run's precision)
        model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    shutil.copy(REF / QWEN / "preprocessor_config.json", out)


def _model(cls, folder: str, part: str, overrides: dict, bf16: bool = False):
    """`cls` from the real config of `folder`/`part` with `overrides`; in bf16 (as released) when asked."""
    import torch

    cfg = {**_read(Path(folder), part), **overrides}
    cfg.pop("clip_output", None)  # the Wan VAE's constructor rejects it
    model = cls.from_config(cfg)
    return model.to(torch.bfloat16) if bf16 else model


def _scheduler(folder: str):
    import diffusers

    found = sorted((REF / folder / "scheduler").glob("*.json"))
    cfg = json.loads(found[0].read_text())
    return getattr(diffusers, cfg["_class_name"]).from_config(cfg)


def _enlarge(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., h, w, 3) -> (..., size, size, 3), nearest neighbour."""
    k = size // x.shape[-2]
    return x.repeat(k, axis=-3).repeat(k, axis=-2) if k > 1 else x


def _datasets(out: Path, scale: dict) -> None:
    from PIL import Image

    from ..world import clips
    from .data import export_shapes
    from .datasets import world_samples, write_dataset

    export_shapes(out / "t2i", 8, 0, scale["image"], "folder")
    for layout in ("t2v", "edit", "video-edit", "in-context"):
        size = scale["image"] if layout == "edit" else scale["clip"]
        samples = [({k: [_enlarge(r, size) for r in v] if k == "references" else _enlarge(v, size)
                     for k, v in media.items()}, text) for media, text in world_samples(layout, 8, 0)]
        write_dataset(out / layout, layout, samples, "folder", clips.FPS, "gif")
        if layout == "edit":
            Image.fromarray(samples[0][0]["source"]).save(out / "source.png")
        elif layout == "video-edit":  # a folder of frames (a gif would merge repeated frames)
            (out / "source_clip").mkdir()
            for i, f in enumerate(samples[0][0]["source"]):
                Image.fromarray(f).save(out / "source_clip" / f"{i:04d}.png")
        elif layout == "in-context":
            for i, r in enumerate(samples[0][0]["references"]):
                Image.fromarray(r).save(out / f"reference{i}.png")
            Image.fromarray(samples[0][0]["file_name"][0]).save(out / "start.png")


def build(out: Path, scale_name: str) -> None:
    import torch
    from diffusers import (AutoencoderDC, AutoencoderKL, AutoencoderKLWan, FluxTransformer2DModel,
                           SanaTransformer2DModel, WanTransformer3DModel)

    from ..world.tiny_flux import save_flux_kontext_folder
    from ..world.tiny_models import save_sana_pipeline_folder
    from ..world.tiny_wan import save_wan_pipeline_folder

    if not REF.is_dir():
        sys.exit(f"error: the real configs are not at {REF} (../shared/reference-configs beside the clone)")
    scale = SCALES[scale_name]
    half = scale_name == "gpu"  # real widths: written in bf16 as released (every loader casts to its dtype)
    torch.manual_seed(0)
    _planner(out / "planner", scale)
    save_sana_pipeline_folder(out / "sana", _model(SanaTransformer2DModel, SANA, "transformer", scale["sana"], half),
                              _model(AutoencoderDC, SANA, "vae", scale["sana_vae"], half), _scheduler(SANA))
    save_flux_kontext_folder(out / "flux", _model(FluxTransformer2DModel, FLUX, "transformer", scale["flux"], half),
                             _model(AutoencoderKL, FLUX, "vae", scale["flux_vae"], half), _scheduler(FLUX),
                             max_shard_size="5GB")
    save_wan_pipeline_folder(out / "wan", _model(WanTransformer3DModel, WAN, "transformer", scale["wan"], half),
                             _model(AutoencoderKLWan, WAN, "vae", scale["wan_vae"], half), _scheduler(WAN),
                             max_shard_size="5GB")
    _datasets(out / "data", scale)
    print(f"wrote the {scale_name} replicas, datasets and inputs to {out}", flush=True)


def commands(out: Path, device: str, steps: int) -> list[tuple[str, list[str]]]:
    """(label, `python -m metacanvas_core` arguments) of the smoke run over the replicas built in `out`."""
    scale = SCALES["gpu" if device == "cuda" else "cpu"]
    image, clip, frames = str(scale["image"]), str(scale["clip"]), str(scale["frames"])
    d, r, s = out / "data", out / "runs", out / "samples"
    context = ["--planner", str(out / "planner"), "--steps", str(steps), "--batch", "2", "--warmup", "1",
               "--log-every", "1", "--save-every", str(steps), "--mixed-precision", "bf16",
               "--gradient-checkpointing", "--validation-steps", "2", "--validation-every", str(steps)]
    train = [*context, "--dit-lora-rank", "4"]
    gen = ["--planner", str(out / "planner"), "--steps", "2", "--device", device, "--upscale", "1"]
    clip_size = ["--width", clip, "--height", clip, "--frames", frames]
    t2v = [str(r / "video" / "metacanvas_t2v.safetensors"), "--prompt", "a red circle moves from left to right"]
    context_weights = str(r / "context" / "metacanvas_video_context.safetensors")
    return [
        ("train t2i (SANA)", ["train", "t2i", "--stage", "metacanvas", "--base", str(out / "sana"), "--data",
                              str(d / "t2i"), "--resolution", image, "--out", str(r / "t2i"), *train,
                              "--validation-prompt", "a red circle at top left"]),
        ("train edit (FLUX.1-Kontext)", ["train", "edit", "--stage", "metacanvas", "--base", str(out / "flux"),
                                         "--data", str(d / "edit"), "--resolution", image, "--out", str(r / "edit"),
                                         *train, "--validation-prompt", "make the red circle green"]),
        ("train video: t2v + i2v (Wan 2.2)", [
            "train", "video", "--stage", "metacanvas", "--base", str(out / "wan"), "--data", str(d / "t2v"),
            "--resolution", clip, "--frames", frames, "--out", str(r / "video"), *train,
            "--validation-prompt", "a red circle moves from left to right"]),
        # video-context widens the Wan DiT (condition channels + mask): its patch embedding trains in full.
        ("train video-context (Wan 2.2, widened)", [
            "train", "video-context", "--stage", "metacanvas", "--base", str(out / "wan"), "--base-connector",
            str(r / "video" / "metacanvas_t2v.safetensors"), "--data", str(d / "video-edit"), "--reference-data",
            str(d / "in-context"), "--resolution", clip, "--frames", frames, "--out", str(r / "context"), *context,
            "--validation-prompt", "make the red circle green"]),
        ("generate t2i", ["generate", "--task", "t2i", "--backbone", str(out / "sana"), "--weights",
                          str(r / "t2i" / "metacanvas_t2i.safetensors"), "--prompt", "a red circle at top left",
                          "--width", image, "--height", image, "--out", str(s / "t2i.png"), *gen]),
        ("generate edit", ["generate", "--task", "edit", "--backbone", str(out / "flux"), "--weights",
                           str(r / "edit" / "metacanvas_edit.safetensors"), "--prompt", "make the red circle green",
                           "--image", str(d / "source.png"), "--width", image, "--height", image,
                           "--out", str(s / "edit.png"), *gen]),
        ("generate t2v", ["generate", "--task", "t2v", "--backbone", str(out / "wan"), "--weights", *t2v,
                          *clip_size, "--out", str(s / "t2v.gif"), *gen]),
        ("generate i2v", ["generate", "--task", "i2v", "--backbone", str(out / "wan"), "--weights", *t2v,
                          "--image", str(d / "start.png"), *clip_size, "--out", str(s / "i2v.gif"), *gen]),
        ("generate video-edit", ["generate", "--task", "video-edit", "--backbone", str(r / "context" / "backbone"),
                                 "--weights", context_weights, "--prompt", "make the red circle green",
                                 "--video", str(d / "source_clip"), "--out", str(s / "video_edit.gif"), *gen]),
        ("generate in-context", ["generate", "--task", "in-context", "--backbone", str(r / "context" / "backbone"),
                                 "--weights", context_weights, "--prompt", "the red circle moves from left to right",
                                 "--image", str(d / "reference0.png"), "--image", str(d / "reference1.png"),
                                 *clip_size, "--out", str(s / "in_context.gif"), *gen]),
    ]


def measure(label: str, argv: list[str]) -> dict:
    """Run `python -m metacanvas_core ARGV` in this process: its exit code, wall time and peak memory (CUDA: the
    peak allocated during the command; CPU: the process's peak resident set so far), and for training the median
    step time (the first step, which warms up, left out) and the last loss."""
    import gc

    import torch

    from ..__main__ import main

    cuda = torch.cuda.is_available()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    code = main(argv)
    row = {"label": label, "code": code, "seconds": round(time.perf_counter() - t0, 2)}
    if cuda:
        row["peak_gb"], row["memory"] = round(torch.cuda.max_memory_allocated() / 1e9, 3), "CUDA peak"
    else:  # Linux reports kilobytes
        row["peak_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
        row["memory"] = "process max RSS"
    if argv[0] == "train" and code == 0:
        out = Path(argv[argv.index("--out") + 1])
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        steps = [r["step_s"] for r in log if r.get("step_s") is not None]
        row["step_s"] = round(float(np.median(steps[1:] or steps)), 3)
        row["loss"] = log[-1]["loss"]
    return row


def report(rows: list[dict]) -> str:
    lines = ["| what | exit | wall s | step s (median) | last loss | peak GB |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['code']} | {r['seconds']} | {r.get('step_s', '')} | {r.get('loss', '')} | "
                     f"{r['peak_gb']} ({r['memory']}) |")
    return "\n".join(lines)


def run(out: Path, device: str, steps: int) -> int:
    """Build the replicas, then train and sample every task in this process; print and keep (record.jsonl) what
    each cost. Stops at the first failure."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here: run DEVICE=cpu bash scripts/gpu_smoke.sh", file=sys.stderr)
        return 2
    scale = "gpu" if device == "cuda" else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    print(f"smoke: {scale} replicas, {steps} steps per task, in {out}", flush=True)
    build(out, scale)
    rows = []
    with (out / "record.jsonl").open("w") as record:
        for label, argv in commands(out, device, steps):
            row = measure(label, argv)
            rows.append(row)
            record.write(json.dumps(row) + "\n")
            record.flush()
            print(f"{label}: exit {row['code']}, {row['seconds']} s", flush=True)
            if row["code"]:
                print(report(rows))
                return row["code"]
    print(report(rows))
    print(f"validation samples: {out / 'runs'}/*/validation/step_{steps}; generated: {out / 'samples'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metacanvas_core.training.smoke", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="replicas, datasets and sampling inputs only")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--scale", choices=tuple(SCALES), default="gpu")
    r = sub.add_parser("run", help="build, then train and sample every task, measured")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        build(args.out, args.scale)
        return 0
    return run(args.out, args.device, args.steps)


if __name__ == "__main__":
    sys.exit(main())

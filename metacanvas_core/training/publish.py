"""Copy trained tiny weights from a runs folder into the package's built-in assets, stored as float16.

Half precision halves what ships (the models load back as float32); every reported score is measured on these
shipped files, not on the float32 training outputs.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from ..builtin import ASSETS, CONTEXT_WEIGHTS, WAN_VAE, WAN_VIDEO_CONTEXT
from ..checkpoints import DIT_FOLDER, DIT_LORA


def _half_safetensors(src: Path, dst: Path) -> None:
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)


def _copy_folder_half(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for f in dst.rglob("*.safetensors"):
        _half_safetensors(f, f)


def _weights_half(src: Path, dst: Path) -> None:
    """MetaCanvas weights and the DiT part beside them (a LoRA file or a fine-tuned DiT folder), as float16."""
    _half_safetensors(src, dst)
    for part in (DIT_FOLDER, DIT_LORA):
        old = dst.parent / part.format(dst.stem)
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        new = src.parent / part.format(src.stem)
        if new.is_dir():
            _copy_folder_half(new, old)
        elif new.is_file():
            _half_safetensors(new, old)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Publish trained tiny weights into metacanvas_core/assets/tiny (fp16).")
    ap.add_argument("--runs", type=Path, help="scripts/train_t2i.sh's runs folder (default: runs, unless only "
                                               "--video-runs is given)")
    ap.add_argument("--video-runs", type=Path, help="scripts/train_video.sh's runs folder")
    ap.add_argument("--video-context-runs", type=Path, help="scripts/train_video_context.sh's runs folder")
    ap.add_argument("--edit-runs", type=Path, help="scripts/train_edit.sh's runs folder")
    ap.add_argument("--video-vae-run", type=Path,
                    help="scripts/train_video.sh's VAE run alone (its vae_ft_run): shipped as assets/tiny/wan_vae, which "
                         "the script then starts from, until the video DiTs trained on it ship with it")
    args = ap.parse_args(argv)
    if args.video_vae_run:
        _copy_folder_half(args.video_vae_run / "vae", ASSETS / WAN_VAE)
    if args.edit_runs:
        _publish_edit(args.edit_runs)
    if args.video_runs:
        _publish_video(args.video_runs)
    if args.video_context_runs:
        _publish_video_context(args.video_context_runs)
    if args.runs or not (args.video_runs or args.video_context_runs or args.edit_runs or args.video_vae_run):
        _publish_t2i(args.runs or Path("runs"))
    total = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    print(f"published to {ASSETS}: {total / 1e6:.1f} MB")


def _publish_video(r: Path) -> None:
    """scripts/train_video.sh's run folders -> the built-in names (one Wan folder serves t2v and i2v; with it, the
    global base's text connector, so a later run can pretrain that base further: FROM=builtin)."""
    _copy_folder_half(r / "global_run" / "backbone", ASSETS / "wan_t2v")
    if (ASSETS / WAN_VAE).exists():  # the video DiTs now ship with the VAE they were trained on
        shutil.rmtree(ASSETS / WAN_VAE)
    _half_safetensors(r / "global_run" / "global_base_t2v.safetensors", ASSETS / "global_base_t2v.safetensors")
    for run, name in (("metacanvas_run", "metacanvas_t2v"), ("metacanvas_k1_run", "metacanvas_t2v_k1"),
                      ("global_continue_run", "global_t2v")):
        _weights_half(r / run / f"{name}.safetensors", ASSETS / f"{name}.safetensors")


def _publish_edit(r: Path) -> None:
    """scripts/train_edit.sh's run folders -> the built-in names (the global base's Kontext folder serves both; with
    it, the base's text connector, so a later run can pretrain that base further: FROM=builtin)."""
    _copy_folder_half(r / "edit_global_run" / "backbone", ASSETS / "flux_edit")
    _half_safetensors(r / "edit_global_run" / "global_base_edit.safetensors", ASSETS / "global_base_edit.safetensors")
    for run, name in (("edit_metacanvas_run", "metacanvas_edit"), ("edit_global_continue_run", "global_edit")):
        _weights_half(r / run / f"{name}.safetensors", ASSETS / f"{name}.safetensors")


def _publish_video_context(r: Path) -> None:
    """scripts/train_video_context.sh's run folders -> the built-in names: one widened Wan folder (each weights file
    carries its own trained DiT, so either run's folder serves both methods)."""
    _copy_folder_half(r / "metacanvas_run" / "backbone", ASSETS / WAN_VIDEO_CONTEXT)
    for run, method in (("metacanvas_run", "metacanvas"), ("global_continue_run", "global")):
        name = CONTEXT_WEIGHTS[method]
        _weights_half(r / run / f"{name}.safetensors", ASSETS / f"{name}.safetensors")


def _publish_t2i(r: Path) -> None:
    """scripts/train_t2i.sh's run folders -> the built-in names."""
    _copy_folder_half(r / "planner_run" / "planner", ASSETS / "planner")
    _copy_folder_half(r / "global_run" / "backbone", ASSETS / "sana_t2i")
    _copy_folder_half(r / "posemb_run" / "backbone", ASSETS / "sana_t2i_posemb")
    for run, name in (("metacanvas_run", "metacanvas_t2i"), ("global_continue_run", "global_t2i"),
                      ("posemb_run", "global_posemb_t2i")):
        _weights_half(r / run / f"{name}.safetensors", ASSETS / f"{name}.safetensors")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()

"""publish: trained run folders -> the built-in assets, float16."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file, save_file

from metacanvas_core.builtin import ASSETS, WAN_T2V, WAN_VAE
from metacanvas_core.training import publish


def test_a_video_vae_run_ships_alone_in_half_precision(tmp_path, monkeypatch):
    run = tmp_path / "vae_run"
    shutil.copytree(ASSETS / WAN_T2V / "vae", run / "vae")
    weights = run / "vae" / "diffusion_pytorch_model.safetensors"
    full = {k: v.float() for k, v in load_file(str(weights)).items()}
    save_file(full, str(weights))
    monkeypatch.setattr(publish, "ASSETS", tmp_path / "assets")
    publish.main(["--video-vae-run", str(run)])
    shipped = load_file(str(tmp_path / "assets" / WAN_VAE / "diffusion_pytorch_model.safetensors"))
    assert shipped.keys() == full.keys() and all(v.dtype == torch.float16 for v in shipped.values())
    assert (tmp_path / "assets" / WAN_VAE / "config.json").read_text() == (run / "vae" / "config.json").read_text()
    assert not (tmp_path / "assets" / "sana_t2i").exists()  # nothing else is published

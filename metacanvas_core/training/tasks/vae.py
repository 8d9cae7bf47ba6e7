"""Tiny world: train the tiny DC-AE (`AutoencoderDC`, f4, 16 channels) on shapes-world images; its scaling factor
is set so latents have unit variance, as SANA's VAE config does for its own."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...world import shapes
from ...world.tiny_models import IMAGE_SIZE, new_vae
from .base import Sample, Task


class VaePretraining(Task):
    name = "vae"

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        pass

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.vae, self.device = new_vae().to(device), device

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.vae.parameters())}]

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        scene = shapes.sample_scene(rng)
        return Sample({"image": shapes.model_pixels(shapes.render(scene.objects, IMAGE_SIZE, rng)[None])[0]})

    def batch(self, samples: list[Sample]) -> dict:
        return {"x": torch.from_numpy(np.stack([s.data["image"] for s in samples])).to(self.device)}

    def loss(self, batch: dict) -> torch.Tensor:
        x = batch["x"]
        rec = self.vae.decode(self.vae.encode(x).latent).sample.float()
        return (rec - x).abs().mean() + (rec - x).pow(2).mean()

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        vae = new_vae()
        vae.load_state_dict(state["vae"])
        with torch.no_grad():
            x = torch.from_numpy(shapes.sample_batch(np.random.default_rng(99), 256)[0])
            std = vae.encode(x).latent.std().item()
        vae.register_to_config(scaling_factor=round(1.0 / std, 5))
        vae.save_pretrained(out / "vae")
        return [out / "vae"]

"""What MetaCanvas needs to know about a diffusion backbone, whatever its architecture.

An adapter wraps the real diffusers modules (transformer, VAE, scheduler) of one architecture and answers: which
module to hook (the patch embedding), what token grid a size gives, how latents are encoded/decoded and how the
DiT is called with the MLLM's text conditioning. Wan and FLUX adapters implement the same interface.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import diffusers
import torch
from torch import nn

from ..errors import MetaCanvasError


def read_model_index(folder: Path) -> dict:
    index = folder / "model_index.json"
    if not index.is_file():
        raise MetaCanvasError(
            f"backbone folder {str(folder)!r} has no model_index.json: point it at a diffusers pipeline folder "
            "(model_index.json, transformer/, vae/, scheduler/), e.g. one under ComfyUI/models/diffusers"
        )
    return json.loads(index.read_text())


def load_scheduler(folder: Path):
    """The folder's own flow-matching scheduler class (e.g. FlowMatchEulerDiscrete, or SANA's flow DPM-Solver)."""
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    cls = getattr(diffusers, cfg["_class_name"], None)
    if cls is None:
        raise MetaCanvasError(f"unknown scheduler class {cfg['_class_name']!r} in {folder / 'scheduler'}")
    return cls.from_pretrained(folder / "scheduler")


class BackboneAdapter(ABC):
    """One diffusion backbone of one architecture, loaded from a diffusers folder."""

    architecture: ClassVar[str]
    transformer_class: ClassVar[str]

    def __init__(self, transformer: nn.Module, vae: nn.Module, scheduler, name: str) -> None:
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    @abstractmethod
    def patch_embed(self) -> nn.Module:
        """The module whose output is the patch-embedded noisy latents: where the canvas enters."""

    @property
    @abstractmethod
    def dit_dim(self) -> int: ...

    @property
    @abstractmethod
    def caption_channels(self) -> int: ...

    @property
    @abstractmethod
    def latent_channels(self) -> int: ...

    @property
    @abstractmethod
    def pixels_per_token(self) -> int:
        """Pixels per DiT token along one side (VAE compression x patch size)."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [-1, 1]."""

    @abstractmethod
    def predict(
        self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """The DiT's flow prediction for latents at `timestep` (B,) in [0, 1000]."""

    def check_size(self, width: int, height: int) -> None:
        step = self.pixels_per_token
        bad = [(n, v) for n, v in (("width", width), ("height", height)) if v <= 0 or v % step]
        if bad:
            what = " and ".join(f"{n} {v}" for n, v in bad)
            fixed = [(n, max(step, round(v / step) * step)) for n, v in bad]
            fix = str(fixed[0][1]) if len(fixed) == 1 else " and ".join(f"{n} {v}" for n, v in fixed)
            raise MetaCanvasError(
                f"{what} {'does' if len(bad) == 1 else 'do'} not fit the {self.architecture} backbone {self.name!r}: "
                f"width and height must be positive multiples of {step} (VAE compression x patch size); use {fix}"
            )

    def token_grid(self, width: int, height: int, frames: int = 1) -> tuple[int, int, int]:
        """(frames, rows, cols) of DiT tokens for an output of this size."""
        self.check_size(width, height)
        return frames, height // self.pixels_per_token, width // self.pixels_per_token

    def latent_shape(self, batch: int, width: int, height: int) -> tuple[int, ...]:
        self.check_size(width, height)
        f = self.pixels_per_token // self.patch_size
        return batch, self.latent_channels, height // f, width // f

    @property
    def patch_size(self) -> int:
        return 1

    def fingerprint(self) -> dict:
        """The DiT's architecture config: MetaCanvas weights record it and must meet the same again."""
        return {k: v for k, v in self.transformer.config.items() if not k.startswith("_")}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "BackboneAdapter":
        self.transformer.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        return self

"""SANA (text-to-image): `SanaTransformer2DModel` + `AutoencoderDC` from a diffusers SanaPipeline folder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderDC, SanaTransformer2DModel
from torch import nn

from .base import NO_CONDITIONING, BackboneAdapter, Conditioning, load_scheduler, pretrained_kwargs


class SanaBackbone(BackboneAdapter):
    architecture = "sana"
    transformer_class = "SanaTransformer2DModel"

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype, device: str | torch.device) -> "SanaBackbone":
        # The pipeline's own text encoder (Gemma) is never loaded: the planner replaces it.
        safe = pretrained_kwargs(dtype)
        transformer = SanaTransformer2DModel.from_pretrained(folder / "transformer", **safe)
        vae = AutoencoderDC.from_pretrained(folder / "vae", **safe)
        return cls(transformer.to(device), vae.to(device), load_scheduler(folder), folder.name)

    @property
    def patch_embed(self) -> nn.Module:
        return self.transformer.patch_embed

    @property
    def caption_channels(self) -> int:
        return self.transformer.config.caption_channels

    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size

    @property
    def pixels_per_token(self) -> int:
        return self.vae.spatial_compression_ratio * self.patch_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images.to(self.vae.dtype)).latent * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample

    def predict(self, latents, timestep, text, text_mask, conditioning: Conditioning = NO_CONDITIONING):
        return self.transformer(
            latents.to(self.dtype),
            encoder_hidden_states=text.to(self.dtype),
            encoder_attention_mask=text_mask,
            timestep=timestep.to(self.dtype),  # as SanaPipeline passes it
            return_dict=False,
        )[0]

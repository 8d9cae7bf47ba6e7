"""FLUX.1-Kontext (image editing): `FluxTransformer2DModel` + `AutoencoderKL` from a FluxKontextPipeline folder.

As FluxKontextPipeline does: latents are `(z - shift_factor) * scaling_factor` of the VAE posterior's mode, packed
2x2 into tokens of 4C channels; a token's id is (0, row, col) and the text tokens' ids are zeros; the source image's
latent tokens follow the generated ones in the sequence with ids (1, row, col), stay clean (no noise, the same
timestep as the rest) and are dropped from the prediction; the timestep goes in divided by 1000; the noise levels
follow the pipeline's sigmas (linspace(1, 1/steps)) shifted by the token count (`mu`).

Latent layout. The adapter's latents are the *unpacked* (B, C, h, w) of the VAE, and packing happens inside
`predict`: the shared loop, its seeded noise (which the pipeline also draws unpacked, then packs) and the flow
schedulers all work element-wise, so they need nothing FLUX-specific, and `encode`/`decode` stay plain images.

Text. The CLIP and T5 encoders the folder lists are never loaded: the planner's text connector output is the
`encoder_hidden_states` (joint_attention_dim channels), and the pooled vector (`pooled_projections`, which CLIP's
pooled output fills in the pipeline) is the masked mean of that same sequence over its real tokens, average-pooled
over channels to pooled_projection_dim (the identity where the two widths are equal, as in the tiny model). Why a
fixed function rather than a new module: it is trained through the text connector that makes the sequence (and
through FLUX's own pooled embedder, `time_text_embed.text_embedder`, whenever the DiT is trained), so checkpoints
store it with what they already store and every existing checkpoint and plan keeps working; and it derives from
what every plan carries, so padded and CFG-batched plans give the same vector (padding is masked out).

Guidance. The released Kontext-dev is guidance-distilled (`guidance_embeds` true): the DiT embeds a guidance value
(`guidance`, 2.5 by default, as the Kontext examples use) and one call per step gives the guided prediction, so
sample it with cfg 1 (no negative plan). True CFG with a negative plan (the loop's `cfg` > 1) stays available on top,
at twice the cost, as the pipeline's `true_cfg_scale`. A tiny model built with guidance_embeds false (the tiny world)
has no guidance embedding: `guidance` is ignored and CFG is the loop's ordinary classifier-free guidance.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxTransformer2DModel
from torch import nn

from ..errors import MetaCanvasError
from .base import NO_CONDITIONING, BackboneAdapter, Conditioning, load_scheduler, pretrained_kwargs

DEFAULT_GUIDANCE = 2.5


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): 2x2 latent patches as tokens, in FluxKontextPipeline's order."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack`: (B, h/2 * w/2, 4C) -> (B, C, h, w)."""
    b, _, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def token_ids(rows: int, cols: int, first: float = 0.0) -> torch.Tensor:
    """(rows * cols, 3) ids (first, row, col) of a token grid, row-major: first 0 generated, 1 the source image."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = first
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


def calculate_shift(seq_len: int, config) -> float:
    """FLUX's resolution-dependent shift `mu`: linear in the token count between the scheduler's two anchors."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_len - base_len)
    b = base_shift - m * base_len
    return seq_len * m + b


class FluxKontextBackbone(BackboneAdapter):
    architecture = "flux"
    transformer_class = "FluxTransformer2DModel"
    conditioning_parts = {"reference": "FLUX.1-Kontext for image editing"}

    def __init__(self, transformer, vae, scheduler, name: str, guidance: float = DEFAULT_GUIDANCE) -> None:
        super().__init__(transformer, vae, scheduler, name)
        self.guidance = guidance
        if transformer.config.patch_size != 1:
            raise MetaCanvasError(f"backbone {name!r}: FLUX packs 2x2 latent patches itself; its DiT has patch_size 1")
        if transformer.config.in_channels != 4 * vae.config.latent_channels:
            raise MetaCanvasError(
                f"backbone {name!r}: its DiT takes {transformer.config.in_channels} channels but 2x2 packing of the "
                f"VAE's {vae.config.latent_channels} latent channels gives {4 * vae.config.latent_channels}: the "
                "transformer and vae folders belong to different checkpoints"
            )

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype, device: str | torch.device) -> "FluxKontextBackbone":
        # The pipeline's CLIP and T5 encoders and tokenizers are never loaded: the planner replaces them.
        transformer = FluxTransformer2DModel.from_pretrained(
            folder / "transformer", **pretrained_kwargs(dtype))
        vae = AutoencoderKL.from_pretrained(folder / "vae", **pretrained_kwargs(dtype))
        return cls(transformer.to(device), vae.to(device), load_scheduler(folder), folder.name)

    @property
    def patch_embed(self) -> nn.Module:
        return self.transformer.x_embedder

    @property
    def dit_dim(self) -> int:
        return self.transformer.inner_dim

    @property
    def caption_channels(self) -> int:
        return self.transformer.config.joint_attention_dim

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def patch_size(self) -> int:
        return 2  # the 2x2 packing

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def pixels_per_token(self) -> int:
        return self.vae_scale_factor * self.patch_size

    # -- latents ----------------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> (B, C, H/8, W/8) for the released VAE: the posterior's mode, shifted
        and scaled."""
        cfg = self.vae.config
        z = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mode()
        return (z - cfg.shift_factor) * cfg.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        return self.vae.decode(latents.to(self.vae.dtype) / cfg.scaling_factor + cfg.shift_factor).sample

    def set_timesteps(self, scheduler, steps: int, latent_shape: tuple[int, ...]) -> None:
        """The pipeline's schedule: sigmas linspace(1, 1/steps), shifted by `mu` for the generated token count
        where the scheduler shifts dynamically (the released one does)."""
        kwargs: dict = {}
        accepted = inspect.signature(scheduler.set_timesteps).parameters
        if scheduler.config.get("use_dynamic_shifting", False):
            _, _, h, w = latent_shape
            kwargs["mu"] = calculate_shift((h // 2) * (w // 2), scheduler.config)
        if "sigmas" in accepted:
            kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
            scheduler.set_timesteps(device=self.device, **kwargs)
        else:
            scheduler.set_timesteps(steps, device=self.device, **kwargs)

    # -- conditioning: the source image as reference tokens ---------------------------------------------------

    def check_conditioning(self, conditioning: Conditioning, latent_shape: tuple[int, ...]) -> None:
        super().check_conditioning(conditioning, latent_shape)
        ref = conditioning.reference
        if ref is None:
            return
        b, c = latent_shape[:2]
        if ref.ndim != 4 or ref.shape[1] != c:
            raise MetaCanvasError(
                f"the source image's latents {tuple(ref.shape)} are not (batch, {c}, height, width) latents of "
                f"backbone {self.name!r}: encode the source image with this backbone's VAE"
            )
        if ref.shape[2] % 2 or ref.shape[3] % 2:
            step = self.pixels_per_token
            raise MetaCanvasError(
                f"the source image's latents {tuple(ref.shape[2:])} cannot be packed 2x2: give a source image whose "
                f"width and height are multiples of {step}"
            )
        if ref.shape[0] not in (1, b):
            raise MetaCanvasError(f"{ref.shape[0]} source images for a batch of {b}: give 1 or {b}")
        if not torch.isfinite(ref).all():
            raise MetaCanvasError("the source image's latents contain NaN or infinite values: check the image")

    def pooled(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, pooled_projection_dim): the masked mean of the text sequence, average-pooled over channels."""
        mask = text_mask.to(text.dtype)[..., None]
        mean = (text * mask).sum(1) / mask.sum(1).clamp_min(1)
        dim = self.transformer.config.pooled_projection_dim
        return mean if mean.shape[-1] == dim else F.adaptive_avg_pool1d(mean[:, None], dim)[:, 0]

    def predict(self, latents, timestep, text, text_mask, conditioning: Conditioning = NO_CONDITIONING):
        b, _, h, w = latents.shape
        dtype, device = self.dtype, latents.device
        tokens = pack(latents.to(dtype))
        ids = token_ids(h // 2, w // 2)
        ref = conditioning.reference
        if ref is not None:
            ref = ref.to(device, dtype).expand(b, -1, -1, -1) if ref.shape[0] == 1 else ref.to(device, dtype)
            tokens = torch.cat([tokens, pack(ref)], 1)
            ids = torch.cat([ids, token_ids(ref.shape[2] // 2, ref.shape[3] // 2, first=1.0)])
        text = text.to(dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance, device=device, dtype=torch.float32)
        attention = None
        if not bool(text_mask.all()):
            # Padded text (a CFG pair of different lengths, a batch of prompts) must not be attended to; FLUX's
            # joint attention runs over [text, image] tokens, in that order.
            keep = torch.cat([text_mask.bool(), text_mask.new_ones(b, tokens.shape[1]).bool()], 1)
            attention = {"attention_mask": keep[:, None, None, :]}
        out = self.transformer(
            hidden_states=tokens,
            timestep=timestep.to(dtype) / 1000,
            guidance=guidance,
            pooled_projections=self.pooled(text, text_mask),
            encoder_hidden_states=text,
            txt_ids=torch.zeros(text.shape[1], 3, device=device, dtype=dtype),
            img_ids=ids.to(device, dtype),
            joint_attention_kwargs=attention,
            return_dict=False,
        )[0]
        return unpack(out[:, : (h // 2) * (w // 2)], h, w)

    # -- the canvas: x_embedder's token output; the default slice keeps the generated tokens, which come first --

    def canvas_timestep(self, model_timestep: torch.Tensor, batch: int) -> torch.Tensor:
        # The DiT is called with timestep / 1000; the canvas fuser embeds it on the 0..1000 scale of the loop.
        return super().canvas_timestep(model_timestep * 1000, batch)

"""Wan 2.2 (text/image-to-video): `WanTransformer3DModel` + `AutoencoderKLWan` from a diffusers Wan pipeline folder.

As the Wan 2.2 TI2V pipelines do: latents are normalised with the VAE's per-channel latents_mean / latents_std,
the DiT gets one timestep per token (`expand_timesteps`), and image-to-video puts the clean latent of the start
image in the first latent frame with timestep 0 for its tokens, re-imposed before every call and at the end.

Video editing and in-context video take conditioning latents the way Wan I2V-14B and Wan-Animate do: a folder
whose transformer has in_channels = latent channels x 2 + mask channels (out_channels = latent channels) gets, per
call, the noisy latents, the mask and the conditioning latents concatenated along channels in that order (Wan I2V's
`cat([latents, mask, condition])`) before its patch embedding. `widened_for_context` turns a text-to-video DiT into
one, the new input channels at zero weight, so it starts out computing exactly what the text-to-video DiT did.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn

from ..errors import MetaCanvasError
from .base import NO_CONDITIONING, BackboneAdapter, Conditioning, load_scheduler, pretrained_kwargs, read_model_index


def widened_for_context(transformer: WanTransformer3DModel, mask_channels: int = 4) -> WanTransformer3DModel:
    """A copy of a text-to-video Wan DiT whose patch embedding also takes a mask and conditioning latents.

    in_channels becomes latent x 2 + `mask_channels` (4 as in Wan I2V, whose mask packs the VAE's 4 frames per latent
    frame); every weight is copied, the patch embedding's into its first (noisy-latent) input channels, the new
    input channels start at zero: the output is bit-identical to the original's whatever the conditioning holds."""
    cfg = transformer.config
    latent = cfg.out_channels
    if cfg.in_channels != latent:
        raise MetaCanvasError(f"the Wan DiT takes {cfg.in_channels} input channels for {latent} latent ones: it is "
                              "already widened (or not a text-to-video DiT); widen a text-to-video Wan DiT")
    if mask_channels < 1:
        raise MetaCanvasError(f"mask_channels {mask_channels}: give at least 1")
    config = {k: v for k, v in cfg.items() if not k.startswith("_")}
    wide = WanTransformer3DModel.from_config({**config, "in_channels": 2 * latent + mask_channels})
    wide = wide.to(transformer.device)
    if transformer.dtype != wide.dtype:  # a cast of its own: diffusers warns on any dtype argument to to()
        wide = wide.to(dtype=transformer.dtype)
    state = transformer.state_dict()
    old = state.pop("patch_embedding.weight")
    new = torch.zeros(old.shape[0], wide.config.in_channels, *old.shape[2:], dtype=old.dtype, device=old.device)
    new[:, :latent] = old
    wide.load_state_dict({**state, "patch_embedding.weight": new}, strict=True)
    return wide


def nearest_valid_frames(frames: int, stride: int = 4) -> list[int]:
    """The frame counts of the form stride * k + 1 nearest to `frames` (one or two of them)."""
    below = max(1, (frames - 1) // stride * stride + 1)
    above = below + stride
    return [below] if frames == below else [below, above]


class WanBackbone(BackboneAdapter):
    architecture = "wan"
    transformer_class = "WanTransformer3DModel"
    makes_clips = True
    conditioning_parts = {
        "first_frames": "Wan 2.2 for image-to-video",
        "context": "a Wan 2.2 folder widened for video editing or in-context video",
        "context_mask": "a Wan 2.2 folder widened for video editing or in-context video",
    }

    def __init__(self, transformer, vae, scheduler, name: str, expand_timesteps: bool = True) -> None:
        super().__init__(transformer, vae, scheduler, name)
        # Wan 2.2 TI2V gives every token its own timestep; Wan 2.1-style folders one per sample.
        self.expand_timesteps = expand_timesteps
        if tuple(transformer.config.patch_size)[0] != 1:
            raise MetaCanvasError(f"backbone {name!r}: a temporal patch size above 1 is not a Wan 2.x layout")

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype, device: str | torch.device) -> "WanBackbone":
        # The pipeline's UMT5 text encoder and tokenizer are never loaded: the planner replaces them.
        index = read_model_index(folder)
        if index.get("transformer_2", [None])[0] is not None:
            raise MetaCanvasError(
                f"backbone {folder.name!r} is a two-expert Wan 2.2 (A14B) folder; MetaCanvas supports the one-DiT "
                "TI2V-5B layout"
            )
        transformer = WanTransformer3DModel.from_pretrained(
            folder / "transformer", **pretrained_kwargs(dtype))
        vae = AutoencoderKLWan.from_pretrained(folder / "vae", **pretrained_kwargs(dtype))
        return cls(transformer.to(device), vae.to(device), load_scheduler(folder), folder.name,
                   bool(index.get("expand_timesteps", False)))

    @property
    def patch_embed(self) -> nn.Module:
        return self.transformer.patch_embedding

    @property
    def caption_channels(self) -> int:
        return self.transformer.config.text_dim

    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size[-1]

    @property
    def pixels_per_token(self) -> int:
        return self.vae.config.scale_factor_spatial * self.patch_size

    @property
    def latent_channels(self) -> int:
        # out_channels: a widened DiT (video editing, in-context) takes more input channels than it denoises
        return self.transformer.config.out_channels

    @property
    def mask_channels(self) -> int:
        """Mask channels of a widened DiT (input channels = latent x 2 + mask); 0 for a text/image-to-video DiT."""
        extra = self.transformer.config.in_channels - self.latent_channels
        return extra - self.latent_channels if extra > 0 else 0

    def takes(self, part: str) -> bool:
        # Only a widened DiT has the channels for context latents and their mask.
        return super().takes(part) and (part not in ("context", "context_mask") or self.mask_channels > 0)

    @property
    def frame_stride(self) -> int:
        """Output frames per latent frame after the first (the VAE's causal temporal compression)."""
        return self.vae.config.scale_factor_temporal

    # -- latents ----------------------------------------------------------------------------------------------

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1 / std) per latent channel, shaped for (B, C, F, h, w), as the Wan pipelines build them."""
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(like.device, like.dtype)
        return mean, inv_std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> (B, C, 1, h, w), or clips (B, 3, F, H, W) -> (B, C, F', h, w); the posterior's
        mode ("argmax"), normalised."""
        x = images.to(self.vae.dtype)
        x = x.unsqueeze(2) if x.ndim == 4 else x
        z = self.vae.encode(x).latent_dist.mode()
        mean, inv_std = self._stats(z)
        return (z - mean) * inv_std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype)
        mean, inv_std = self._stats(z)
        return self.vae.decode(z / inv_std + mean).sample

    # -- sizes ------------------------------------------------------------------------------------------------

    def check_size(self, width: int, height: int) -> None:
        """Besides the multiples: the DiT's rotary positions reach `rope_max_seq_len` tokens along each axis (1024
        in Wan 2.2's config: 32768 pixels for TI2V-5B, 4096 for the tiny Wan); beyond, diffusers fails with a raw
        view error after the run has started."""
        super().check_size(width, height)
        most = int(self.transformer.config.get("rope_max_seq_len", 1024))
        step = self.pixels_per_token
        over = [(n, v) for n, v in (("width", width), ("height", height)) if v // step > most]
        if over:
            what = " and ".join(f"{n} {v}" for n, v in over)
            raise MetaCanvasError(
                f"{what} {'is' if len(over) == 1 else 'are'} too large for the Wan backbone {self.name!r}: its DiT "
                f"places at most {most} tokens of {step} pixels along each side (rope_max_seq_len); use at most "
                f"{most * step}"
            )

    def latent_frames(self, frames: int) -> int:
        s = self.frame_stride
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or (frames - 1) % s:
            near = " or ".join(str(c) for c in nearest_valid_frames(max(int(frames), 1), s))
            raise MetaCanvasError(
                f"frames {frames} does not fit the Wan backbone {self.name!r}: a clip has {s}k+1 frames (the VAE "
                f"keeps the first frame and compresses every {s} after it); use {near}"
            )
        return (frames - 1) // s + 1

    def output_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.frame_stride + 1

    def latent_shape(self, batch: int, width: int, height: int, frames: int = 1) -> tuple[int, ...]:
        self.check_size(width, height)
        f = self.vae.config.scale_factor_spatial
        return batch, self.latent_channels, self.latent_frames(frames), height // f, width // f

    # -- conditioning: image-to-video's clean first frame -----------------------------------------------------

    def check_conditioning(self, conditioning: Conditioning, latent_shape: tuple[int, ...]) -> None:
        super().check_conditioning(conditioning, latent_shape)
        self._check_context(conditioning, latent_shape)
        first = conditioning.first_frames
        if first is None:
            return
        if not self.expand_timesteps:
            raise MetaCanvasError(
                f"backbone {self.name!r} has one timestep per sample (no expand_timesteps in model_index.json): it "
                "cannot keep a start frame clean; use a Wan 2.2 TI2V folder for image-to-video"
            )
        b, c, frames, h, w = latent_shape
        if first.ndim != 5 or first.shape[1] != c or first.shape[3:] != (h, w):
            raise MetaCanvasError(
                f"the start image's latents {tuple(first.shape)} do not fit latents {latent_shape}: give the start "
                "image at the clip's width and height"
            )
        if first.shape[2] >= frames:
            raise MetaCanvasError(
                f"{first.shape[2]} given latent frames leave nothing to generate in a clip of {frames}: add frames"
            )
        if first.shape[0] not in (1, b):
            raise MetaCanvasError(f"{first.shape[0]} start images for a batch of {b}: give 1 or {b}")
        if not torch.isfinite(first).all():
            raise MetaCanvasError("the start image's latents contain NaN or infinite values: check the image")

    def _check_context(self, conditioning: Conditioning, latent_shape: tuple[int, ...]) -> None:
        context, mask = conditioning.context, conditioning.context_mask
        if self.mask_channels == 0:
            if context is not None or mask is not None:
                raise MetaCanvasError(
                    f"the Wan backbone {self.name!r} takes no source clip or reference images (its DiT has "
                    f"{self.transformer.config.in_channels} input channels, no conditioning channels): remove them, "
                    "or load a Wan folder made for video editing or in-context video"
                )
            return
        if context is None or mask is None:
            raise MetaCanvasError(
                f"the Wan backbone {self.name!r} is made for video editing or in-context video (its DiT takes "
                f"{self.transformer.config.in_channels} input channels): give the source clip or the reference images"
                " (both the conditioning latents and their mask), or load a text-to-video Wan folder"
            )
        b, c, frames, h, w = latent_shape
        for name, t, ch in (("source clip / reference latents", context, c), ("context mask", mask,
                                                                              self.mask_channels)):
            if t.ndim != 5 or t.shape[1:] != (ch, frames, h, w):
                raise MetaCanvasError(
                    f"the {name} {tuple(t.shape)} do not fit latents {latent_shape}: expected (batch, {ch}, {frames}, "
                    f"{h}, {w}); give the clip or references at the output's width, height and frame count"
                )
            if t.shape[0] not in (1, b):
                raise MetaCanvasError(f"the {name} have batch {t.shape[0]} for a batch of {b}: give 1 or {b}")
            if not torch.isfinite(t).all():
                raise MetaCanvasError(f"the {name} contain NaN or infinite values: check the clip or images")

    def condition(self, latents: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        first = conditioning.first_frames
        if first is None:
            return latents
        n = first.shape[2]
        first = first.to(latents.device, latents.dtype).expand(latents.shape[0], -1, -1, -1, -1)
        return torch.cat([first, latents[:, :, n:]], 2)

    def _model_timestep(self, timestep: torch.Tensor, latents: torch.Tensor, clean_frames: int) -> torch.Tensor:
        """(B,) or, with expand_timesteps, (B, seq_len): one per token, 0 for the clean frames' tokens. Float32
        whatever the DiT's dtype, as the Wan pipelines pass it (the time embedding runs in float32)."""
        timestep = timestep.float()
        if not self.expand_timesteps:
            return timestep
        _, _, frames, h, w = latents.shape
        p = self.patch_size
        per_frame = (h // p) * (w // p)
        mask = torch.ones(frames * per_frame, dtype=timestep.dtype, device=timestep.device)
        mask[: clean_frames * per_frame] = 0
        return mask[None] * timestep[:, None]

    def predict(self, latents, timestep, text, text_mask, conditioning: Conditioning = NO_CONDITIONING):
        # Wan's cross-attention takes no mask; its pipelines zero the text embeddings past each prompt instead.
        text = text.to(self.dtype) * text_mask[..., None].to(self.dtype)
        x = latents.to(self.dtype)
        if conditioning.context is not None:  # Wan I2V's order: noisy latents, mask, conditioning latents
            extra = [conditioning.context_mask, conditioning.context]
            x = torch.cat([x, *(t.to(x.device, x.dtype).expand(x.shape[0], -1, -1, -1, -1) for t in extra)], 1)
        return self.transformer(
            x,
            timestep=self._model_timestep(timestep, latents, conditioning.clean_frames),
            encoder_hidden_states=text,
            return_dict=False,
        )[0]

    # -- the canvas: patch_embedding (Conv3d) outputs a channel-first grid (B, D, F, rows, cols) ------------------

    def patch_frames(self, patch_output: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, d, frames, rows, cols = patch_output.shape
        return patch_output.permute(0, 2, 3, 4, 1).reshape(b, frames, rows * cols, d)

    def with_patch_frames(self, patch_output: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        b, d, f, rows, cols = patch_output.shape
        return frames.reshape(b, f, rows, cols, d).permute(0, 4, 1, 2, 3)

    def canvas_timestep(self, model_timestep: torch.Tensor, batch: int) -> torch.Tensor:
        # Per-token timesteps: the generated tokens share one level, the clean ones are at 0.
        if model_timestep.ndim == 2:
            return model_timestep.amax(dim=1)
        return super().canvas_timestep(model_timestep, batch)


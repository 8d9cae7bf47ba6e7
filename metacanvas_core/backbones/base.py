"""What MetaCanvas needs to know about a diffusion backbone, whatever its architecture.

An adapter wraps the real diffusers modules (transformer, VAE, scheduler) of one architecture and answers: which
module to hook (the patch embedding), what token grid a size gives, how latents are encoded/decoded and how the
DiT is called with the MLLM's text conditioning. Wan and FLUX adapters implement the same interface.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields, replace
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


def pretrained_kwargs(dtype: torch.dtype) -> dict:
    """`from_pretrained` options every adapter loads its transformer and VAE with: safetensors only (a pickle can run
    code when loaded) and low-memory loading, which models that keep modules in float32 (Wan) require; it needs
    accelerate, a runtime dependency of the pack for that reason."""
    return {"torch_dtype": dtype, "use_safetensors": True, "low_cpu_mem_usage": True}


def load_scheduler(folder: Path):
    """The folder's own flow-matching scheduler class (e.g. FlowMatchEulerDiscrete, or SANA's flow DPM-Solver)."""
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    cls = getattr(diffusers, cfg["_class_name"], None)
    if cls is None:
        raise MetaCanvasError(f"unknown scheduler class {cfg['_class_name']!r} in {folder / 'scheduler'}")
    return cls.from_pretrained(folder / "scheduler")


@dataclass(frozen=True)
class Conditioning:
    """What a generation is conditioned on besides the plan, as scaled latents of the backbone's VAE.

    The sampling loop never looks inside: it hands this to the adapter, which knows how each part enters its model
    (and refuses parts it cannot take). Every tensor has batch 1 (shared) or the sample batch. A new kind of
    conditioning is a new field here plus adapter code, never a change to the loop: e.g. FLUX Kontext's reference
    latents (the adapter appends their tokens in `predict`; the canvas hook only sees the generated grid), or a
    video edit's source latents and mask (the Wan adapter concatenates them along channels in `predict`).
    """

    # (B, C, f, h, w): clean latent frames that open the clip and stay clean through sampling (image-to-video)
    first_frames: torch.Tensor | None = field(default=None, metadata={"what": "start image"})
    # (B, C, h, w): the source image to edit, whose clean latent tokens the DiT sees beside the generated ones
    # (FLUX.1-Kontext); not part of the generated grid, so it never gets the canvas
    reference: torch.Tensor | None = field(default=None, metadata={"what": "source image to edit"})
    # (B, C, F, h, w): latents laid out like the generated clip that the DiT sees beside the noisy ones, concatenated
    # along channels before the patch embedding (Wan I2V / Wan-Animate style): the source clip's latents (video
    # editing) or the reference images' latents, one per latent frame from the first (in-context video); zeros where
    # nothing is given. Never part of the generated grid's frames, so the canvas still reaches every generated frame.
    context: torch.Tensor | None = field(default=None, metadata={"what": "source clip or reference images"})
    # (B, M, F, h, w): 1 where `context` holds given latents, 0 elsewhere; M is the backbone's mask channels
    context_mask: torch.Tensor | None = field(default=None, metadata={"what": "context mask"})

    @property
    def clean_frames(self) -> int:
        """Leading latent frames of the sample that are given, not generated: they never get the canvas."""
        return 0 if self.first_frames is None else self.first_frames.shape[2]

    @staticmethod
    def what(part: str) -> str:
        """What the field `part` holds, in the words of error messages."""
        return next(f.metadata["what"] for f in fields(Conditioning) if f.name == part)

    def given(self) -> list[str]:
        """Names of the parts present."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def batched(self, n: int) -> "Conditioning":
        """Every tensor repeated to batch `n` (CFG doubles the batch; one start image may serve several samples)."""
        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None or t.shape[0] == n:
                return t
            if n % t.shape[0]:
                raise MetaCanvasError(f"conditioning for a batch of {t.shape[0]} cannot serve a batch of {n}")
            return t.repeat_interleave(n // t.shape[0], dim=0)

        return replace(self, **{f.name: rep(getattr(self, f.name)) for f in fields(self)})

    def for_cfg(self) -> "Conditioning":
        """The conditioning of a CFG call, whose batch is the negative half then the positive half of the same
        samples in the same order: every tensor tiled twice (never interleaved, which would hand each sample
        another sample's source in one branch)."""
        return replace(self, **{f.name: None if getattr(self, f.name) is None else torch.cat([getattr(self, f.name)] * 2)
                                for f in fields(self)})


NO_CONDITIONING = Conditioning()

class BackboneAdapter(ABC):
    """One diffusion backbone of one architecture, loaded from a diffusers folder."""

    architecture: ClassVar[str]
    transformer_class: ClassVar[str]
    # The Conditioning fields this architecture takes -> which backbone that is, for the error when another is given
    conditioning_parts: ClassVar[dict[str, str]] = {}
    makes_clips: ClassVar[bool] = False  # video backbones (a frame axis); image backbones make one picture

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
    def dit_dim(self) -> int:
        """The DiT's inner width (its patch embedding's output channels)."""
        cfg = self.transformer.config
        return cfg.num_attention_heads * cfg.attention_head_dim

    @property
    @abstractmethod
    def caption_channels(self) -> int: ...

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    @abstractmethod
    def pixels_per_token(self) -> int:
        """Pixels per DiT token along one side (VAE compression x patch size)."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (video backbones: (B, C, 1, h, w); they also take
        clips (B, 3, F, H, W))."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [-1, 1] (video backbones: clips (B, 3, F, H, W))."""

    @abstractmethod
    def predict(
        self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
        conditioning: Conditioning = NO_CONDITIONING,
    ) -> torch.Tensor:
        """The DiT's flow prediction for latents whose generated part is at `timestep` (B,) in [0, 1000] (the
        scheduler's float32 values).

        The adapter builds the model's own timestep argument (e.g. per token) and feeds `conditioning` the way its
        model takes it; `latents` already went through `condition`.
        """

    # -- conditioning: adapters name the parts they take, check them and feed them to their model ----------------

    def check_conditioning(self, conditioning: Conditioning, latent_shape: tuple[int, ...]) -> None:
        """Refuse conditioning this backbone cannot take; adapters extend this to check that theirs fits latents
        of `latent_shape`."""
        for part in conditioning.given():
            if part not in self.conditioning_parts:
                who = " or ".join(a.conditioning_parts[part] for a in _architectures() if part in a.conditioning_parts)
                raise MetaCanvasError(
                    f"the {self.architecture} backbone {self.name!r} takes no {Conditioning.what(part)}: remove it, or "
                    f"load a backbone that does ({who or 'none known'})"
                )

    def takes(self, part: str) -> bool:
        """Whether this backbone takes the Conditioning field `part` (asked before building it)."""
        return part in self.conditioning_parts

    @property
    def mask_channels(self) -> int:
        """Mask channels the DiT takes beside channel-concatenated conditioning latents; 0 when it takes none."""
        return 0

    def condition(self, latents: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        """The latents as the model sees them (and as sampling returns them): e.g. with clean first frames."""
        return latents

    def set_timesteps(self, scheduler, steps: int, latent_shape: tuple[int, ...]) -> None:
        """Set `scheduler` to `steps` steps for latents of `latent_shape` (some backbones shift the noise levels
        by the image's token count)."""
        scheduler.set_timesteps(steps, device=self.device)

    # -- where the canvas enters: the patch embedding's output, per frame ------------------------------------------

    def patch_frames(self, patch_output: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """The patch embedding's output as (B, frames, rows * cols, D) tokens of the generated grid.

        Default: token-major output (B, N, D) whose first frames * rows * cols tokens are the grid.
        """
        frames, rows, cols = grid
        n = frames * rows * cols
        return patch_output[:, :n].reshape(patch_output.shape[0], frames, rows * cols, patch_output.shape[-1])

    def with_patch_frames(self, patch_output: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """`patch_output` with its grid tokens replaced by `frames` (B, F, rows * cols, D); the inverse of
        `patch_frames`. Tokens beyond the grid (e.g. reference tokens) pass through untouched."""
        tokens = frames.reshape(frames.shape[0], -1, frames.shape[-1])
        if tokens.shape[1] == patch_output.shape[1]:
            return tokens
        return torch.cat([tokens, patch_output[:, tokens.shape[1]:]], 1)

    def canvas_timestep(self, model_timestep: torch.Tensor, batch: int) -> torch.Tensor:
        """(B,) noise level of the generated tokens, from the timestep argument the model was called with."""
        return model_timestep.expand(batch) if model_timestep.ndim == 0 else model_timestep

    # -- sizes -------------------------------------------------------------------------------------------------

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

    def latent_frames(self, frames: int) -> int:
        """Latent (= token) frames for `frames` output frames. Image backbones make exactly one frame."""
        if frames != 1:
            raise MetaCanvasError(
                f"the {self.architecture} backbone {self.name!r} makes images, not clips (frames {frames}): use "
                "frames 1, or load a video backbone (Wan 2.2)"
            )
        return 1

    def token_grid(self, width: int, height: int, frames: int = 1) -> tuple[int, int, int]:
        """(frames, rows, cols) of DiT tokens for an output of this size."""
        self.check_size(width, height)
        return self.latent_frames(frames), height // self.pixels_per_token, width // self.pixels_per_token

    def output_frames(self, latent_frames: int) -> int:
        """Output frames that `latent_frames` decode to (the inverse of `latent_frames`)."""
        return 1

    def latent_shape(self, batch: int, width: int, height: int, frames: int = 1) -> tuple[int, ...]:
        """(B, C, h, w) for images; video adapters add the frame axis (B, C, F, h, w)."""
        self.check_size(width, height)
        self.latent_frames(frames)
        f = self.pixels_per_token // self.patch_size
        return batch, self.latent_channels, height // f, width // f

    @property
    def patch_size(self) -> int:
        return 1

    def fingerprint(self) -> dict:
        """The DiT's architecture config: MetaCanvas weights record it and must meet the same again."""
        config = {k: v for k, v in self.transformer.config.items() if not k.startswith("_")}
        return json.loads(json.dumps(config))  # as stored: tuples of a freshly built model read back as lists

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "BackboneAdapter":
        self.transformer.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        return self


def _architectures() -> list[type[BackboneAdapter]]:
    """Every adapter class (each says which conditioning it takes), without importing them here."""
    found, todo = [], [BackboneAdapter]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found

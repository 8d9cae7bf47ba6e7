"""Injecting the canvas into a real diffusers DiT with diffusers' own hook system, never a forked forward.

Two named hooks: one on the transformer records the timestep of the call, one on the patch embedding adds the
canvas connector's residual to its output, frame by frame. The adapter says how the patch embedding lays out its
output (tokens for SANA/FLUX, a channel-first 3-D grid for Wan) and which timestep the generated tokens are at;
given (clean) frames never get the residual. Removing the hooks by name restores the untouched backbone; they
compose with diffusers' cache and offloading hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .backbones.base import BackboneAdapter
from .connectors import CanvasFuser

CANVAS_HOOK = "metacanvas_canvas"
TIMESTEP_HOOK = "metacanvas_timestep"


class _TimestepHook(ModelHook):
    def __init__(self, state: dict) -> None:
        super().__init__()
        self.state = state

    def pre_forward(self, module, *args, **kwargs):
        self.state["timestep"] = kwargs["timestep"]
        return args, kwargs


class _CanvasHook(ModelHook):
    def __init__(
        self, backbone: BackboneAdapter, fuser: CanvasFuser, canvas: torch.Tensor, strength: float, grid,
        clean_frames: int, state: dict,
    ) -> None:
        super().__init__()
        self.backbone, self.fuser, self.strength, self.grid, self.state = backbone, fuser, strength, grid, state
        frames, rows, cols = grid
        # Only generated frames get the residual: the fuser runs per frame, so dropping the clean ones is exact.
        self.clean = clean_frames
        self.canvas = canvas.reshape(canvas.shape[0], frames, rows * cols, canvas.shape[-1])[:, clean_frames:]

    def post_forward(self, module, output: torch.Tensor) -> torch.Tensor:
        _, height, width = self.grid
        frames = self.backbone.patch_frames(output, self.grid)  # (B, F, rows * cols, D)
        b, d = frames.shape[0], frames.shape[-1]
        canvas = self.canvas.to(output.dtype)
        if canvas.shape[0] != b:  # one plan for a batch of several samples
            canvas = canvas.repeat_interleave(b // canvas.shape[0], dim=0)
        timestep = self.backbone.canvas_timestep(self.state["timestep"].to(output.device), b)
        generated = frames[:, self.clean:]
        residual = self.fuser(generated.reshape(b, -1, d), canvas.reshape(b, -1, d), timestep, height, width)
        generated = generated + self.strength * residual.reshape(generated.shape)
        return self.backbone.with_patch_frames(output, torch.cat([frames[:, : self.clean], generated], 1))


@contextmanager
def canvas_injected(
    backbone: BackboneAdapter, fuser: CanvasFuser, canvas: torch.Tensor, grid: tuple[int, int, int],
    strength: float = 1.0, clean_frames: int = 0,
) -> Iterator[None]:
    """Within the block, every DiT call adds `strength` x the canvas residual to the patch-embedded latents.

    `canvas` (B, N, D) is already resampled to the token grid `grid` (frames, rows, cols) of this generation; the
    first `clean_frames` frames (given, e.g. image-to-video's start frame) never get it.
    """
    state: dict = {}
    outer = HookRegistry.check_if_exists_or_initialize(backbone.transformer)
    inner = HookRegistry.check_if_exists_or_initialize(backbone.patch_embed)
    outer.register_hook(_TimestepHook(state), TIMESTEP_HOOK)
    inner.register_hook(_CanvasHook(backbone, fuser, canvas, strength, grid, clean_frames, state), CANVAS_HOOK)
    try:
        yield
    finally:
        inner.remove_hook(CANVAS_HOOK, recurse=False)
        outer.remove_hook(TIMESTEP_HOOK, recurse=False)

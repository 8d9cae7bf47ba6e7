"""Injecting the canvas into a real diffusers DiT with diffusers' own hook system, never a forked forward.

Two named hooks: one on the transformer records the timestep of the call, one on the patch embedding adds the
canvas connector's residual to its output. Removing them by name restores the untouched backbone; they compose
with diffusers' cache and offloading hooks.
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
    def __init__(self, fuser: CanvasFuser, canvas: torch.Tensor, strength: float, grid, state: dict) -> None:
        super().__init__()
        self.fuser, self.canvas, self.strength, self.grid, self.state = fuser, canvas, strength, grid, state

    def post_forward(self, module, output: torch.Tensor) -> torch.Tensor:
        _, height, width = self.grid
        canvas = self.canvas.to(output.dtype)
        if canvas.shape[0] != output.shape[0]:  # one plan for a batch of several samples
            canvas = canvas.repeat_interleave(output.shape[0] // canvas.shape[0], dim=0)
        timestep = self.state["timestep"].to(output.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(output.shape[0])
        return output + self.strength * self.fuser(output, canvas, timestep, height, width)


@contextmanager
def canvas_injected(
    backbone: BackboneAdapter, fuser: CanvasFuser, canvas: torch.Tensor, grid: tuple[int, int, int],
    strength: float = 1.0,
) -> Iterator[None]:
    """Within the block, every DiT call adds `strength` x the canvas residual to the patch-embedded latents.

    `canvas` (B, N, D) is already resampled to the token grid `grid` (frames, rows, cols) of this generation.
    """
    state: dict = {}
    outer = HookRegistry.check_if_exists_or_initialize(backbone.transformer)
    inner = HookRegistry.check_if_exists_or_initialize(backbone.patch_embed)
    outer.register_hook(_TimestepHook(state), TIMESTEP_HOOK)
    inner.register_hook(_CanvasHook(fuser, canvas, strength, grid, state), CANVAS_HOOK)
    try:
        yield
    finally:
        inner.remove_hook(CANVAS_HOOK, recurse=False)
        outer.remove_hook(TIMESTEP_HOOK, recurse=False)

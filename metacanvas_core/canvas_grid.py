"""Canvas grids, their multimodal-RoPE positions, and resampling to a backbone's patch grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CanvasGrid:
    """Canvas layout: `frames` keyframes of `height` x `width` tokens (frames=1 for images)."""

    frames: int
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        return self.frames * self.height * self.width

    def as_list(self) -> list[int]:
        return [self.frames, self.height, self.width]


def canvas_position_ids(start: int, grid: CanvasGrid, time_interval: int = 1) -> torch.Tensor:
    """(3, K) M-RoPE positions (t, row, col) of a canvas that follows `start` text positions.

    This is how Qwen2.5-VL numbers the patches of an image or video placed after text: every axis is offset by
    the current position, rows and columns count up within the grid, and time advances by `time_interval` per
    frame. Text that follows would continue at `start + max(height, width)`.
    """
    t = torch.arange(grid.frames) * time_interval + start
    h = torch.arange(grid.height) + start
    w = torch.arange(grid.width) + start
    tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
    return torch.stack([tt, hh, ww]).reshape(3, -1)


def resample_canvas(canvas: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Resample a canvas (B, T, h, w, C) to (B, frames, height, width, C).

    Time is interpolated linearly between keyframes that sit at the first, ..., last frame (align_corners), a
    single keyframe is held for every frame; space is resized bilinearly. Equal sizes are returned untouched.
    """
    b, t, h, w, c = canvas.shape
    x = canvas.permute(0, 4, 1, 2, 3)  # B, C, T, h, w
    if t != frames:
        x = F.interpolate(x, size=(frames, h, w), mode="trilinear", align_corners=True)
    if (h, w) != (height, width):
        x = x.transpose(1, 2).reshape(b * frames, c, h, w)
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        x = x.reshape(b, frames, c, height, width).transpose(1, 2)
    return x.permute(0, 2, 3, 4, 1)

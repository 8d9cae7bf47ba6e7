"""Canvas grids, their multimodal-RoPE positions, and resampling to a backbone's patch grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CanvasGrid:
    """Canvas layout: `frames` keyframes of `height` x `width` tokens (frames=1 for images).

    `keyframe_seconds` is the clip time between neighbouring keyframes, Qwen2.5-VL's `second_per_grid_t` for a
    video: it spaces the keyframes' temporal positions (see `keyframe_seconds`); a single keyframe ignores it.
    """

    frames: int
    height: int
    width: int
    keyframe_seconds: float = 1.0

    @property
    def num_tokens(self) -> int:
        return self.frames * self.height * self.width

    def as_list(self) -> list[int]:
        return [self.frames, self.height, self.width]


def keyframe_seconds(frames: int, fps: float, keyframes: int) -> float:
    """Clip time between neighbouring keyframes when `keyframes` span a clip of `frames` at `fps`.

    Keyframes sit on the first, ..., last latent frame (`resample_canvas` interpolates with aligned corners), and
    Wan's latent frame j stands for video frame 4j, so keyframe i stands for video frame i (frames - 1) / (k - 1):
    17 frames at 8 fps with 3 keyframes are 1 s apart (Wan 2.2's 121 frames at 24 fps: 2.5 s). A single keyframe
    has no spacing (0).
    """
    return 0.0 if keyframes < 2 else (frames - 1) / ((keyframes - 1) * fps)


def canvas_position_ids(start: int, grid: CanvasGrid, time_interval: float = 1) -> torch.Tensor:
    """(3, K) M-RoPE positions (t, row, col) of a canvas that follows `start` text positions.

    This is how Qwen2.5-VL numbers the patches of an image or video placed after text: every axis is offset by
    the current position, rows and columns count up within the grid, and time advances by `time_interval` per
    frame, truncated to an integer as Qwen does. For a video Qwen's interval is `tokens_per_second` x
    `second_per_grid_t`; the planner passes `tokens_per_second` x `grid.keyframe_seconds`. Text that follows would
    continue at `start + max(height, width)`.
    """
    t = (torch.arange(grid.frames) * time_interval).long() + start
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

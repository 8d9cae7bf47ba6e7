"""What a generation takes besides its prompts, in the two forms that use it: what the planner sees before each
prompt and what the DiT is conditioned on (`TaskInputs`); and the image-to-video start image as one.

Every task's definition (`tasks.py`) builds one from its input: nothing (text-to-image, text-to-video), a start image
(here), a source image to edit (`editing.py`), a source clip or reference images (`video_tasks.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backbones.base import NO_CONDITIONING, BackboneAdapter, Conditioning
from .errors import MetaCanvasError
from .pixels import check_image_batch, cover_resize
from .visual_inputs import Visual


@dataclass(frozen=True)
class TaskInputs:
    """What a generation of `width` x `height` (x `frames`) takes besides its prompts."""

    visuals: list[list[Visual]]  # what the planner sees before the prompt: one list per sample, or one for all
    conditioning: Conditioning  # for the DiT, besides the plan: batch 1 (shared) or one per sample
    width: int
    height: int
    frames: int

    @classmethod
    def none(cls, width: int, height: int, frames: int) -> "TaskInputs":
        """The prompt alone (text-to-image, text-to-video)."""
        return cls([], NO_CONDITIONING, width, height, frames)

    def seen_by(self, prompts: int, where: str) -> list[list[Visual]] | None:
        """What each of `prompts` prompts' planner sees (None: nothing)."""
        if not self.visuals:
            return None
        if len(self.visuals) not in (1, prompts):
            raise MetaCanvasError(f"{where} holds {len(self.visuals)} inputs for {prompts} prompts: give 1 or "
                                  f"{prompts}")
        return self.visuals * prompts if len(self.visuals) == 1 else self.visuals


def planner_visual(images: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) in [0, 1] -> uint8 (N, H, W, 3) for the planner, at their own size: the planner folder's Qwen
    processor scales them within its pixel limits (the tiny planner's: the 32x32 it was trained on)."""
    return (images.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def one_image_per_sample(images: torch.Tensor, samples: int, where: str) -> torch.Tensor:
    """A checked batch of images, one for every sample (batch 1) or one per sample."""
    x = check_image_batch(images, where)
    if x.shape[0] not in (1, samples):
        fix = "give one (e.g. pick it with an Image From Batch node)" + (f" or {samples}" if samples > 1 else "")
        raise MetaCanvasError(f"{where} holds {x.shape[0]} images for a batch of {samples}: {fix}")
    return x


def start_image_inputs(
    backbone: BackboneAdapter, images: torch.Tensor, width: int, height: int, frames: int, samples: int = 1,
    where: str = "start image",
) -> TaskInputs:
    """Image-to-video: each clip opens with its start image, kept clean (latent frame 0 at timestep 0, as Wan 2.2 TI2V
    does), and the planner sees it first. Another size is scaled to cover and centre-cropped like ComfyUI's
    WanImageToVideo (common_upscale with "center", bilinear)."""
    x = one_image_per_sample(images, samples, where)
    backbone.token_grid(width, height, frames)
    pixels = cover_resize(x.movedim(-1, 1), width, height) * 2 - 1
    with torch.no_grad():
        first = backbone.encode(pixels.to(backbone.device, backbone.dtype))
    shown = planner_visual((pixels.movedim(1, -1) + 1) / 2)
    return TaskInputs([[im] for im in shown], Conditioning(first_frames=first), width, height, frames)

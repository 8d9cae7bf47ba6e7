"""Image editing's input (FLUX.1-Kontext): one source image goes two ways, to the planner (which sees it before the
instruction, so the plan knows what is where) and to the DiT as Kontext's clean reference latents."""

from __future__ import annotations

import torch

from .backbones.base import BackboneAdapter, Conditioning
from .pixels import cover_resize
from .task_inputs import TaskInputs, one_image_per_sample, planner_visual

EDIT_TASK = "edit"  # the task's name, which its trainer writes into the weights' recipe


def source_image_inputs(
    backbone: BackboneAdapter, images: torch.Tensor, width: int, height: int, samples: int = 1,
    where: str = "source image",
) -> TaskInputs:
    """The source image(s) (one for every sample, or one per sample) for an output of (width, height): another size
    is scaled to cover it and centre-cropped, as ComfyUI's FluxKontextImageScale does (there to a preferred Kontext
    size; here to the output's size, so the source's tokens line up with the generated ones)."""
    x = one_image_per_sample(images, samples, where)
    backbone.check_size(width, height)
    pixels = cover_resize(x.movedim(-1, 1), width, height, antialias=True) * 2 - 1
    with torch.no_grad():
        reference = backbone.encode(pixels.to(backbone.device, backbone.dtype))
    return TaskInputs([[im] for im in planner_visual(x)], Conditioning(reference=reference), width, height, 1)

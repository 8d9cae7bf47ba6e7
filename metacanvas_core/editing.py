"""Image editing (FLUX.1-Kontext): one source image goes two ways, to the planner (which sees it before the
instruction, so the plan knows what is where) and to the DiT as Kontext's clean reference latents.

Edit weights say so in their metadata (training recipe `task: "edit"`): they were trained to change a given image,
so sampling them without one is refused rather than silently drawing a new picture.
"""

from __future__ import annotations

import numpy as np
import torch

from .backbones.base import BackboneAdapter, Conditioning
from .checkpoints import LoadedConnector
from .pixels import check_image_batch, cover_resize
from .errors import MetaCanvasError

EDIT_TASK = "edit"


def is_edit_weights(loaded: LoadedConnector | None) -> bool:
    return loaded is not None and loaded.recipe.get("task") == EDIT_TASK


def require_source(loaded: LoadedConnector | None, given: bool, where: str, fix: str) -> None:
    """Refuse sampling edit weights without a source image (`where` names the node or flag, `fix` says how)."""
    if is_edit_weights(loaded) and not given:
        raise MetaCanvasError(f"{where}: the MetaCanvas weights {loaded.name!r} are edit weights (trained to change "
                              f"a source image) and no source image was given: {fix}")


def source_conditioning(
    backbone: BackboneAdapter, images: torch.Tensor, width: int, height: int, where: str = "source image"
) -> Conditioning:
    """The source image(s) as Kontext reference latents of an output of (width, height): another size is scaled to
    cover it and centre-cropped, as ComfyUI's FluxKontextImageScale does (there to a preferred Kontext size; here
    to the output's size, so the source's tokens line up with the generated ones)."""
    if not backbone.takes("reference"):
        raise MetaCanvasError(
            f"{where}: the {backbone.architecture} backbone {backbone.name!r} takes no source image to edit: remove "
            "it, or load a FLUX.1-Kontext backbone"
        )
    x = check_image_batch(images, where)
    pixels = cover_resize(x.movedim(-1, 1), width, height, antialias=True) * 2 - 1
    with torch.no_grad():
        return Conditioning(reference=backbone.encode(pixels.to(backbone.device, backbone.dtype)))


def source_visuals(images: torch.Tensor, prompts: int, where: str = "source image") -> list[list[np.ndarray]]:
    """What each of `prompts` prompts' planner sees: its own source image (one image serves them all)."""
    x = check_image_batch(images, where)
    if x.shape[0] not in (1, prompts):
        raise MetaCanvasError(f"{where} holds {x.shape[0]} images for {prompts} prompts: give 1 or {prompts}")
    arr = (x.cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return [[arr[i if x.shape[0] > 1 else 0]] for i in range(prompts)]

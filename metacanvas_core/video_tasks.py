"""Video editing and in-context video: user inputs -> what the planner sees and what the Wan DiT is conditioned on.

One place for both, shared by the node, the CLI and the training task:

- video editing: the planner watches the source clip (a `Video`, through Qwen2.5-VL's video path and M-RoPE), then
  reads the instruction, then writes the keyframe canvas; the DiT gets the clip's latents in its conditioning
  channels, the mask 1 on every frame (the whole clip is given). The output has the clip's size and frame count.
- in-context video: the planner sees the reference images, then the prompt; the DiT gets reference r's latent in
  latent frame r of the conditioning channels, the mask 1 on those frames and 0 (with zero latents) elsewhere.

Why references sit in the condition frames rather than as extra leading frames: channel concatenation needs every
conditioning latent on the generated grid's (frame, row, column), and extra leading frames would be generated tokens
(a longer clip whose first frames must be kept clean and cut off, i.e. temporal concatenation, another design). In
the condition channels they are never generated, never decoded and never get the canvas, and the DiT's attention
across frames lets every generated frame read them. Frame 0 first: a lone image is what the causal Wan VAE encodes
as a first latent frame (as image-to-video's start frame); a second reference takes frame 1, and so on, so a clip
holds at most as many references as it has latent frames. The mask, not the position, says which frames are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backbones.base import BackboneAdapter, Conditioning
from .checkpoints import LoadedConnector
from .pixels import check_image_batch, cover_resize
from .errors import MetaCanvasError
from .visual_inputs import Video

VIDEO_EDIT, IN_CONTEXT = "video-edit", "in-context"


@dataclass(frozen=True)
class VideoTaskInputs:
    """What one generation of a video task takes, besides the prompt."""

    visuals: list  # what the planner sees before the prompt, in order (images and/or one `Video`)
    conditioning: Conditioning  # context latents + mask for the widened Wan DiT
    width: int
    height: int
    frames: int


def check_task_weights(loaded: LoadedConnector, task: str, where: str) -> int | None:
    """Refuse weights trained for another task (their recipe names it, and `serves` lists the tasks weights trained
    for several serve, e.g. video-context's video-edit and in-context); the most references they were trained with
    (recipe `max_references`), if recorded."""
    trained = loaded.recipe.get("task")
    serves = loaded.recipe.get("serves") or ([trained] if trained is not None else [])
    if serves and task not in serves:
        serving = f" (serving {', '.join(serves)})" if serves != [trained] else ""
        raise MetaCanvasError(f"{where}: the MetaCanvas weights {loaded.name!r} were trained for task {trained!r}"
                              f"{serving}, not {task!r}: give weights trained for {task}, or use --task {serves[0]}")
    most = loaded.recipe.get("max_references")
    return int(most) if most is not None else None


def _where(where: str, e: MetaCanvasError) -> MetaCanvasError:
    return MetaCanvasError(f"{where}: {e}")


def _check_backbone(backbone: BackboneAdapter, where: str) -> int:
    if not backbone.takes("context"):
        raise MetaCanvasError(
            f"{where}: the {backbone.architecture} backbone {backbone.name!r} takes no source clip or reference "
            "images: load a Wan folder made for video editing or in-context video"
            " (its DiT takes latent x 2 + mask channels)"
        )
    return backbone.mask_channels


def planner_visual(images: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) in [0, 1] -> uint8 (N, H, W, 3) for the planner, at their own size: the planner folder's Qwen
    processor scales them within its pixel limits (the tiny planner's: the 32x32 it was trained on)."""
    return (images.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def clip_visual(clip: torch.Tensor, fps: float, where: str = "source clip") -> Video:
    """The source clip (F, H, W, 3) in [0, 1] as the planner watches it: a `Video` at `fps` (Plan Canvas's video
    input and `video_edit_inputs` alike)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise MetaCanvasError(f"{where}: frame rate {fps!r} must be a positive number of frames per second")
    return Video(planner_visual(_clip_frames(clip, where)), float(fps))


def _clip_frames(clip: torch.Tensor, where: str) -> torch.Tensor:
    if isinstance(clip, torch.Tensor) and clip.ndim == 4 and 0 in clip.shape[:3]:
        raise MetaCanvasError(f"{where} is empty {tuple(clip.shape)}: give the clip to edit (frames, height, width, 3)")
    return check_image_batch(clip, where)


def edit_conditioning(backbone: BackboneAdapter, clip: torch.Tensor, where: str = "source clip") -> Conditioning:
    """The widened Wan DiT's conditioning for editing the clip (F, H, W, 3) in [0, 1]: its latents, the mask 1."""
    mask_channels = _check_backbone(backbone, where)
    frames = _clip_frames(clip, where)
    n, height, width = frames.shape[:3]
    try:
        backbone.check_size(width, height)
        backbone.latent_frames(n)
    except MetaCanvasError as e:
        raise _where(where, e) from e
    pixels = frames.movedim(-1, 0)[None] * 2 - 1  # (1, 3, F, H, W) in [-1, 1]
    with torch.no_grad():
        context = backbone.encode(pixels.to(backbone.device, backbone.dtype))
    mask = torch.ones(1, mask_channels, *context.shape[2:], dtype=context.dtype, device=context.device)
    return Conditioning(context=context, context_mask=mask)


def video_edit_inputs(
    backbone: BackboneAdapter, clip: torch.Tensor, fps: float, where: str = "source clip",
) -> VideoTaskInputs:
    """The source clip (F, H, W, 3) in [0, 1] (ComfyUI's IMAGE batch of frames) at `fps` frames per second."""
    conditioning = edit_conditioning(backbone, clip, where)
    n, height, width = clip.shape[:3]
    return VideoTaskInputs([clip_visual(clip, fps, where)], conditioning, width, height, n)


def in_context_inputs(
    backbone: BackboneAdapter, references: list[torch.Tensor], width: int, height: int, frames: int,
    where: str = "reference images", max_references: int | None = None,
) -> VideoTaskInputs:
    """Reference images (each (1, H, W, 3) or (H, W, 3) in [0, 1], all one size) for a clip of the given size."""
    mask_channels = _check_backbone(backbone, where)
    if not references:
        raise MetaCanvasError(f"{where}: no reference images: give at least one")
    refs = [check_image_batch(r if r.ndim == 4 else r[None], f"{where} {i + 1}") for i, r in enumerate(references)]
    if any(r.shape[0] != 1 for r in refs):
        raise MetaCanvasError(f"{where}: give each reference as one image, not a batch")
    sizes = sorted({tuple(r.shape[1:3]) for r in refs})
    if len(sizes) > 1:
        raise MetaCanvasError(f"{where} have mixed sizes {sizes} (height, width): resize them to one size")
    try:
        latent_frames = backbone.latent_frames(frames)
        backbone.check_size(width, height)
    except MetaCanvasError as e:
        raise _where(where, e) from e
    limit = latent_frames if max_references is None else min(latent_frames, max_references)
    if len(refs) > limit:
        why = (f"the weights were trained with at most {max_references}" if limit == max_references
               else f"a clip of {frames} frames holds one per latent frame")
        raise MetaCanvasError(f"{where}: {len(refs)} references, but {why}: give at most {limit}")
    x = torch.cat(refs)  # (R, H, W, 3)
    pixels = cover_resize(x.movedim(-1, 1), width, height, antialias=True) * 2 - 1
    with torch.no_grad():
        latents = backbone.encode(pixels.to(backbone.device, backbone.dtype))  # (R, C, 1, h, w)
    context = latents.new_zeros(1, latents.shape[1], latent_frames, *latents.shape[3:])
    context[0, :, : len(refs)] = latents[:, :, 0].movedim(0, 1)
    mask = context.new_zeros(1, mask_channels, latent_frames, *latents.shape[3:])
    mask[:, :, : len(refs)] = 1
    visuals = list(planner_visual(x))
    return VideoTaskInputs(visuals, Conditioning(context=context, context_mask=mask), width, height, frames)

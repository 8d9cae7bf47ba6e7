"""Video editing's and in-context video's inputs: a source clip or reference images -> what the planner sees and
what the widened Wan DiT is conditioned on (`TaskInputs`), for sampling and the training task alike:

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

import torch

from .backbones.base import BackboneAdapter, Conditioning
from .errors import MetaCanvasError
from .pixels import check_image_batch, cover_resize
from .task_inputs import TaskInputs, planner_visual
from .visual_inputs import Video

VIDEO_EDIT, IN_CONTEXT = "video-edit", "in-context"  # the tasks' names, which their trainer writes into the recipe


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


def clip_visual(clip: torch.Tensor, fps: float, where: str = "source clip") -> Video:
    """The source clip (F, H, W, 3) in [0, 1] as the planner watches it: a `Video` at `fps` (Plan Canvas's video
    input and `video_edit_inputs` alike)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise MetaCanvasError(f"{where}: frame rate {fps!r} must be a positive number of frames per second")
    return Video(planner_visual(_clip_frames(clip, where)), float(fps))


def _clip_frames(clip: torch.Tensor, where: str) -> torch.Tensor:
    if isinstance(clip, torch.Tensor) and clip.ndim == 4 and 0 in clip.shape[:3]:
        raise MetaCanvasError(f"{where} is empty {tuple(clip.shape)}: give the clip to edit (frames, height, width, 3)")
    return check_image_batch(clip, where, clip=True)


def _edit_conditioning(backbone: BackboneAdapter, clip: torch.Tensor, where: str = "source clip") -> Conditioning:
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
) -> TaskInputs:
    """The source clip (F, H, W, 3) in [0, 1] (ComfyUI's IMAGE batch of frames) at `fps` frames per second; the
    output has its size and frame count."""
    conditioning = _edit_conditioning(backbone, clip, where)
    n, height, width = clip.shape[:3]
    return TaskInputs([[clip_visual(clip, fps, where)]], conditioning, width, height, n)


def in_context_inputs(
    backbone: BackboneAdapter, references: list[torch.Tensor], width: int, height: int, frames: int,
    where: str = "reference images", max_references: int | None = None,
) -> TaskInputs:
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
    conditioning = Conditioning(context=context, context_mask=mask)
    return TaskInputs([list(planner_visual(x))], conditioning, width, height, frames)

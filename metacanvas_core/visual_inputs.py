"""What the planner sees besides the prompt: images and clips, checked and prepared the way Qwen2.5-VL takes them.

Pixels go through the planner folder's own `Qwen2VLImageProcessor` (its PIL backend: no torchvision needed), the
path the built-in planner was trained on: resized to a multiple of patch x merge within the processor's pixel
limits (Qwen's `smart_resize`, so any size is taken and the token count follows the size), rescaled, normalised,
patchified. A clip's frames go through the same steps one by one and are then paired in time (`temporal_patch_size`
frames per patch, the last frame repeated to fill the last pair), which is what Qwen's video processor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .errors import MetaCanvasError

IMAGE, VIDEO = 1, 2  # Qwen2.5-VL's mm_token_type_ids for image and video placeholders (text is 0)


@dataclass(frozen=True)
class Video:
    """A clip the planner watches: `frames` (T, H, W, 3) uint8, or float in [0, 1], and its frame rate.

    The frame rate is required: Qwen's video processor assumes 24 fps without metadata, and the rate sets how far
    apart in time (M-RoPE) the frames are."""

    frames: np.ndarray | torch.Tensor
    fps: float


Visual = np.ndarray | torch.Tensor | Image.Image | Video


def rgb_uint8(image, what: str) -> np.ndarray:
    """One image as (H, W, 3) uint8. uint8 as is; float must lie in [0, 1] (ComfyUI's IMAGE). An alpha channel is
    refused: dropping it keeps whatever colour sits under transparent pixels, compositing it (as Qwen's processor
    would, on white) invents a background; either silently changes what the planner sees."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            raise MetaCanvasError(f"{what} has an alpha channel: composite it onto a background or drop it first "
                                  "(e.g. ComfyUI's Split Image with Alpha), then pass the RGB image")
        image = np.asarray(image.convert("RGB"))
    x = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if x.ndim != 3 or x.shape[-1] not in (3, 4):
        raise MetaCanvasError(f"{what} has shape {tuple(x.shape)}; expected one image (height, width, 3)"
                              + (": pass a batch as a list of images, or a clip as a Video" if x.ndim == 4 else ""))
    if x.shape[-1] == 4:
        raise MetaCanvasError(f"{what} has an alpha channel (4 channels): composite it onto a background or drop it "
                              "first (e.g. ComfyUI's Split Image with Alpha), then pass the RGB image")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise MetaCanvasError(f"{what} is empty ({x.shape[0]}x{x.shape[1]} pixels)")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise MetaCanvasError(f"{what} has dtype {x.dtype}; pass uint8 (0-255) or float in [0, 1]")
    if not np.isfinite(x).all():
        raise MetaCanvasError(f"{what} contains NaN or infinite values: check the node or code that made it")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise MetaCanvasError(f"{what} has values in [{x.min():.3g}, {x.max():.3g}]; float images must lie in "
                              "[0, 1] (ComfyUI's IMAGE); convert [-1, 1] images with (x + 1) / 2")
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass
class PreparedVisuals:
    """Every visual of a batch ready for the vision tower, and each prompt's placeholder tokens."""

    prefixes: list[list[int]]  # per prompt: <|vision_start|> <|image_pad|> x n <|vision_end|> per visual, in order
    types: list[list[int]]  # per prompt prefix: mm_token_type_ids (IMAGE, VIDEO or 0)
    pixel_values: torch.Tensor | None = None  # images of all prompts, patchified, prompt by prompt
    image_grid_thw: torch.Tensor | None = None  # (N_images, 3)
    image_owner: list[int] = field(default_factory=list)  # prompt index of each image
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None  # (N_videos, 3)
    second_per_grid_ts: torch.Tensor | None = None  # (N_videos,) seconds per temporal patch
    video_owner: list[int] = field(default_factory=list)

    def grids_of(self, prompt: int) -> dict[str, torch.Tensor | None]:
        """Keyword arguments of Qwen's `get_rope_index` for one prompt's visuals."""
        img = [i for i, o in enumerate(self.image_owner) if o == prompt]
        vid = [i for i, o in enumerate(self.video_owner) if o == prompt]
        return {
            "image_grid_thw": self.image_grid_thw[img] if img else None,
            "video_grid_thw": self.video_grid_thw[vid] if vid else None,
            "second_per_grid_ts": self.second_per_grid_ts[vid] if vid else None,
        }


def _process(processor, frames: list[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        out = processor(images=frames, return_tensors="np")
    except ValueError as e:  # smart_resize refuses aspect ratios beyond 200:1
        raise MetaCanvasError(f"{what} cannot be taken by the planner's vision tower ({e}); crop or pad it") from e
    return out["pixel_values"], out["image_grid_thw"]


def video_patches(processor, frames: np.ndarray, what: str = "video") -> tuple[np.ndarray, list[int]]:
    """(T, H, W, 3) uint8 frames -> (patches, [grid_t, grid_h, grid_w]) laid out as Qwen's video processor does.

    The image processor gives every frame `temporal_patch_size` identical copies per patch; keep one copy of each
    frame, repeat the last frame to fill the last temporal patch, and pair consecutive frames instead."""
    pixels, grids = _process(processor, list(frames), what)
    tp, p = processor.temporal_patch_size, processor.patch_size
    n, gh, gw = len(frames), int(grids[0][1]), int(grids[0][2])
    x = pixels.reshape(n, gh * gw, -1, tp, p, p)[:, :, :, 0]
    if pad := -n % tp:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    gt = x.shape[0] // tp
    x = x.reshape(gt, tp, gh * gw, -1, p, p).transpose(0, 2, 3, 1, 4, 5)
    return np.ascontiguousarray(x.reshape(gt * gh * gw, -1)), [gt, gh, gw]


def _video_frames(video: Video, what: str) -> np.ndarray:
    try:
        fps = float(video.fps)
    except (TypeError, ValueError):
        fps = float("nan")
    if not np.isfinite(fps) or fps <= 0:
        raise MetaCanvasError(f"{what} has frame rate {video.fps!r}; give the clip's frames per second (e.g. 8)")
    frames = video.frames
    if len(frames) == 0:
        raise MetaCanvasError(f"{what} has no frames: pass at least one frame")
    arrays = [rgb_uint8(f, f"{what} frame {j}") for j, f in enumerate(frames)]
    if len({a.shape for a in arrays}) > 1:
        raise MetaCanvasError(f"{what} has frames of different sizes {sorted({a.shape[:2] for a in arrays})}; "
                              "resize them to one size")
    return np.stack(arrays)


def prepare_visuals(processor, config, visuals: list[list[Visual]]) -> PreparedVisuals:
    """Check and patchify the visuals of every prompt (`visuals[i]`: what prompt i sees, in order, before it).

    `config` is the Qwen2.5-VL config (token ids, merge size)."""
    if processor is None:
        raise MetaCanvasError("this planner folder has no preprocessor_config.json, so it cannot see images; use a "
                              "complete Qwen2.5-VL folder (it ships one)")
    merge = config.vision_config.spatial_merge_size
    start, end = config.vision_start_token_id, config.vision_end_token_id
    pad = {IMAGE: config.image_token_id, VIDEO: config.video_token_id}
    out = PreparedVisuals([], [])
    images, image_grids, videos, video_grids, seconds = [], [], [], [], []
    for i, row in enumerate(visuals):
        if not isinstance(row, (list, tuple)):
            raise MetaCanvasError(f"visuals[{i}] must be a list of images/Videos (empty for none), got {type(row)}")
        prefix, types = [], []
        for j, v in enumerate(row):
            what = f"visuals[{i}][{j}]"
            if isinstance(v, Video):
                patches, grid = video_patches(processor, _video_frames(v, what), what)
                videos.append(patches)
                video_grids.append(grid)
                seconds.append(processor.temporal_patch_size / float(v.fps))
                out.video_owner.append(i)
                kind = VIDEO
            else:
                patches, grids = _process(processor, [rgb_uint8(v, what)], what)
                images.append(patches)
                grid = [int(g) for g in grids[0]]
                image_grids.append(grid)
                out.image_owner.append(i)
                kind = IMAGE
            n = grid[0] * grid[1] * grid[2] // merge**2
            prefix += [start] + [pad[kind]] * n + [end]
            types += [0] + [kind] * n + [0]
        out.prefixes.append(prefix)
        out.types.append(types)
    if images:
        out.pixel_values = torch.from_numpy(np.concatenate(images))
        out.image_grid_thw = torch.tensor(image_grids, dtype=torch.long)
    if videos:
        out.pixel_values_videos = torch.from_numpy(np.concatenate(videos))
        out.video_grid_thw = torch.tensor(video_grids, dtype=torch.long)
        out.second_per_grid_ts = torch.tensor(seconds, dtype=torch.float32)
    return out

"""Pixels in and out: checking ComfyUI image batches, fitting an image to an output's size, reading images and clips
from files and writing them (PNG, animated GIF or PNG frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MetaCanvasError


def check_image_batch(images, where: str, clip: bool = False) -> torch.Tensor:
    """A batch of RGB images (B, H, W, 3) in [0, 1] (ComfyUI's IMAGE) as float, or a clear error. The one check of
    every image a task is given (edit sources, start images, reference images, source clips): an image that is all
    zeros is refused, the mark of an empty or failed image upstream; `clip`: the batch is one clip's frames, refused
    only when all of them are (a black frame inside a clip is a fade, not a failure)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MetaCanvasError(f"{where} must be an image batch (images, height, width, 3), got {shape}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise MetaCanvasError(f"{where} is empty {tuple(images.shape)}: give at least one image with pixels")
    if images.shape[-1] == 4:
        raise MetaCanvasError(f"{where} has an alpha channel: give an RGB image (ComfyUI's Load Image gives RGB and "
                              "puts the alpha in its MASK output)")
    if images.shape[-1] != 3:
        raise MetaCanvasError(f"{where} has {images.shape[-1]} channels: give an RGB image")
    x = images.float()
    if not torch.isfinite(x).all():
        raise MetaCanvasError(f"{where} contains NaN or infinite values: check what made it")
    blank = [i for i in range(x.shape[0]) if not x[i].any()] if not clip else ([0] if not x.any() else [])
    if blank:
        which = where if clip or x.shape[0] == 1 else f"{where} image {blank[0] + 1}"
        raise MetaCanvasError(f"{which} is all zeros (an empty or failed image upstream, e.g. a node that made no "
                              "picture): give the image you mean")
    return x.clamp(0, 1)


def cover_resize(x: torch.Tensor, width: int, height: int, antialias: bool = False) -> torch.Tensor:
    """(B, C, H, W) scaled to cover (height, width) and centre-cropped, as ComfyUI's common_upscale with "center"
    (bilinear; `antialias` low-pass filters a downscale, as the lanczos of ComfyUI's Kontext nodes does)."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    # Crop the source to the target's aspect ratio around its centre (common_upscale's arithmetic), then resize.
    old, new = w / h, width / height
    dx = round((w - w * (new / old)) / 2) if old > new else 0
    dy = round((h - h * (old / new)) / 2) if old < new else 0
    return F.interpolate(x[..., dy : h - dy, dx : w - dx], size=(height, width), mode="bilinear", antialias=antialias)


def load_image(path: Path, where: str = "--image") -> torch.Tensor:
    """An image file as (1, H, W, 3) in [0, 1]; alpha is refused rather than silently dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as e:
        raise MetaCanvasError(f"{where} {str(path)!r} is not a readable image ({e})") from e
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        raise MetaCanvasError(f"{where} {str(path)!r} has an alpha channel: save it as RGB (e.g. flatten it)")
    return torch.from_numpy(np.array(img.convert("RGB"))).float().div(255)[None]


def _pil(image: torch.Tensor, upscale: int):
    """(H, W, 3) in [0, 1] as a PIL image, enlarged `upscale` times (nearest neighbour: every pixel a block)."""
    from PIL import Image

    img = Image.fromarray((image.numpy() * 255 + 0.5).clip(0, 255).astype("uint8"))
    return img.resize((img.width * upscale, img.height * upscale), Image.NEAREST) if upscale > 1 else img


def save_image(image: torch.Tensor, path: Path, upscale: int = 1) -> None:
    """One image (H, W, 3) in [0, 1] as a PNG, `upscale` times its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil(image, upscale).save(path)


def gif_timing(fps: float) -> dict:
    """PIL GIF save options for `fps`: a frame delay in whole 1/100 s (the format's unit), so the held-longer frame
    PIL makes of a run of identical frames is a whole multiple of it, and that delay in the comment, so a clip
    that is one still frame throughout still reads back as its frame count."""
    delay = 10 * max(1, round(100 / fps))
    return {"duration": delay, "comment": f"{_GIF_DELAY}{delay}"}


_GIF_DELAY = "metacanvas frame delay ms="


def _gif_frame_delay(comment: bytes, delays: list[int]) -> int:
    """One frame's delay in ms: the one gif_timing wrote in the comment, else the shortest delay (0: unknown)."""
    ours = comment.decode("latin-1").removeprefix(_GIF_DELAY)
    if comment.startswith(_GIF_DELAY.encode()) and ours.isdigit():
        return int(ours)
    return min((d for d in delays if d > 0), default=0)


def save_clip(frames: torch.Tensor, path: Path, fps: int = 8, upscale: int = 1) -> None:
    """Frames (F, H, W, 3) in [0, 1] as an animated GIF (`*.gif`) or, for any other path, a folder of PNGs."""
    images = [_pil(f, upscale) for f in frames]
    if path.suffix.lower() == ".gif":
        path.parent.mkdir(parents=True, exist_ok=True)
        images[0].save(path, save_all=True, append_images=images[1:], **gif_timing(fps), loop=0)
        return
    path.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(path / f"frame_{i:04d}.png")


def load_clip(path: Path, where: str = "--video") -> tuple[torch.Tensor, float | None]:
    """A clip as (F, H, W, 3) in [0, 1] and its frame rate: an animated GIF (its frame duration gives the rate) or a
    folder of image frames in name order (rate None: the caller's). Alpha is refused rather than silently dropped."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
        if not files:
            raise MetaCanvasError(f"{where} {str(path)!r} holds no image frames (.png, .jpg, .webp, .bmp)")
        frames = [load_image(f, f"{where} frame")[0] for f in files]
        fps = None
    else:
        try:
            img = Image.open(path)
            timed = [(torch.from_numpy(np.array(f.convert("RGB"))).float().div(255), f.info.get("duration") or 0)
                     for f in ImageSequence.Iterator(img)]
        except (OSError, UnidentifiedImageError) as e:
            raise MetaCanvasError(f"{where} {str(path)!r} is not a readable clip (an animated GIF or a folder of "
                                  f"frames) ({e})") from e
        # GIF writers (PIL among them) store a run of identical frames as one frame held longer: hold it for as
        # many frames as its delay spans, so a still stretch keeps its frame count
        base = _gif_frame_delay(img.info.get("comment", b""), [d for _, d in timed])
        frames = [f for f, d in timed for _ in range(max(1, round(d / base)) if base else 1)]
        fps = 1000.0 / base if base else None
    sizes = sorted({tuple(f.shape[:2]) for f in frames})
    if len(sizes) > 1:
        raise MetaCanvasError(f"{where} {str(path)!r} has frames of different sizes {sizes}: give frames of one size")
    return torch.stack(frames), fps

"""Decoding a dataset's images and clips to the training size: resize the shorter side, centre-crop, and for clips
resample to the run's frame rate and frame count.

Clips decode with PyAV (an optional dependency, `pip install av`: FFmpeg's demuxers and decoders, so mp4, webm, mkv,
mov and animated gif alike); a clip may also be a folder of frame images, read at the run's frame rate. Frames are
taken at times 0, 1/fps, 2/fps, ... from the clip's start, each the last decoded frame shown at that time (a clip
filmed at 30 fps and trained at 8 fps keeps every 3.75th frame; one at 4 fps shows each frame twice). A clip shorter
than `frames` at `fps` is a broken sample, never stretched or looped.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MetaCanvasError
from ..pixels import gif_timing
from .data import BrokenSample

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".webp")


def _cover_crop(img: Image.Image, resolution: int, name: str) -> np.ndarray:
    """uint8 (res, res, 3): the shorter side scaled to `resolution`, centre-cropped, as diffusers' training examples
    do; never upscaled (a smaller image is a broken sample)."""
    img = img.convert("RGB")
    w, h = img.size
    if min(w, h) < resolution:
        raise BrokenSample(name, f"is {w}x{h}, smaller than the training resolution {resolution}")
    if (w, h) != (resolution, resolution):
        s = resolution / min(w, h)
        img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
        left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    return np.array(img, dtype=np.uint8)  # a writable copy (PIL's buffer is read-only)


def decode_image(data: bytes, name: str, resolution: int | None) -> np.ndarray:
    """An image file's bytes -> uint8 (res, res, 3), or (H, W, 3) at its own size for `resolution` None."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises many types for bad files
        raise BrokenSample(name, f"unreadable image ({type(e).__name__}: {e})") from e
    return np.array(img.convert("RGB"), dtype=np.uint8) if resolution is None else _cover_crop(img, resolution, name)


def _pyav():
    try:
        import av
    except ImportError as e:  # not a broken sample: every clip would be
        raise MetaCanvasError("--data: decoding video files needs PyAV (pip install av, or the pack's `video` extra); "
                              "or give each clip as a folder of frame images") from e
    return av


def _timed_frames(data: bytes, name: str) -> list[tuple[float, Image.Image]]:
    """(presentation time in seconds, frame) of every frame of a video file, in order."""
    av = _pyav()
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise BrokenSample(name, "has no video stream")
            stream = container.streams.video[0]
            out, last = [], -1.0
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else last + 1e-6
                out.append((t, frame.to_image()))
                last = t
    except BrokenSample:
        raise
    except Exception as e:  # PyAV raises FFmpeg's errors (InvalidDataError, ...) for broken files
        raise BrokenSample(name, f"unreadable clip ({type(e).__name__}: {e})") from e
    if not out:
        raise BrokenSample(name, "has no frames")
    t0 = out[0][0]
    return [(t - t0, img) for t, img in out]


def _resampled(timed: list[tuple[float, Image.Image]], name: str, frames: int, fps: float) -> list[Image.Image]:
    """The frame shown at each of times k / fps, k < frames. A frame lasts until the next; the last one as long as
    the one before it (or 1 / fps alone), so the clip ends at `end` and its last sample must fall before that."""
    step = timed[-1][0] - timed[-2][0] if len(timed) > 1 else 1 / fps
    end, need = timed[-1][0] + step, (frames - 1) / fps
    if need >= end + 1e-6:
        raise BrokenSample(name, f"is {end:.2f} s long; {frames} frames at {fps:g} fps need more than {need:.2f} s "
                                 "(give a lower --fps or --frames, or drop the clip)")
    times = np.array([t for t, _ in timed])
    picks = [int(np.searchsorted(times, k / fps + 1e-6, side="right")) - 1 for k in range(frames)]
    return [timed[max(0, j)][1] for j in picks]


def decode_clip(data: bytes, name: str, resolution: int, frames: int, fps: float) -> np.ndarray:
    """A video file's bytes -> uint8 (frames, res, res, 3) at `fps` from its start."""
    picked = _resampled(_timed_frames(data, name), name, frames, fps)
    return np.stack([_cover_crop(img, resolution, name) for img in picked])


def decode_frame_folder(folder: Path, resolution: int, frames: int) -> np.ndarray:
    """A folder of frame images (sorted by name, one per frame at the run's rate) -> uint8 (frames, res, res, 3)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTS)
    if len(files) < frames:
        raise BrokenSample(str(folder), f"holds {len(files)} frame images, fewer than --frames {frames}")
    out = []
    for p in files[:frames]:
        try:
            data = p.read_bytes()
        except OSError as e:
            raise BrokenSample(str(p), f"cannot read ({e.strerror})") from e
        out.append(decode_image(data, str(p), resolution))
    return np.stack(out)


def encode_clip(frames: np.ndarray, fps: float, fmt: str) -> bytes:
    """uint8 (F, H, W, 3) -> the bytes of a `fmt` file: "mp4" (lossless RGB H.264 through PyAV, so an exported world
    trains exactly what the world is) or "gif" (PIL only; its delays are in 1/100 s, so 8 fps is stored as 12 cs)."""
    buf = io.BytesIO()
    if fmt == "gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], **gif_timing(fps),
                       loop=0, optimize=False, disposal=1)
        return buf.getvalue()
    av = _pyav()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264rgb", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"crf": "0"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()

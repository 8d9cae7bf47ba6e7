"""Will a run fit? A conservative estimate of what sampling and decoding need, from what every backbone adapter
knows (token grid, DiT width, latent shape, VAE decoder width, dtype, CFG doubling), checked against the device's
free memory before anything is allocated; and the clean-up after an out-of-memory error all the same.

Weights are already resident when a run starts, so only the run's own tensors count. Activations are freed layer
by layer under no_grad, so the peak is one block's worth, not the depth's. The factors below were measured on the
built-in tiny SANA on CPU (peak RSS: DiT 27x, decoder 6x the units below) and rounded up; attention is counted as
linear in the tokens (SANA's linear attention, and the fused SDPA kernels of FLUX and Wan never hold N x N).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from .errors import MetaCanvasError

DIT_ACTIVATIONS = 40  # peak bytes of one DiT call per (sample x token x DiT width x weight byte)
DECODER_ACTIVATIONS = 8  # peak bytes of the VAE decoder per (output pixel x full-resolution channel x weight byte)
LATENT_COPIES = 8  # latents, their CFG copy, velocity, solver history, noise: fp32 each
FALLBACK_DECODER_CHANNELS = 128  # a decoder whose config names no block widths: the common full-resolution width

T = TypeVar("T")
FreeMemory = Callable[[torch.device], "int | None"]


@dataclass(frozen=True)
class Need:
    sampling: int  # bytes
    decoding: int

    def of(self, stage: str) -> int:
        return self.decoding if stage == "decoding" else max(self.sampling, self.decoding)


def decoder_channels(vae) -> int:
    """Channels of the decoder's full-resolution stage (its narrowest): AutoencoderDC, AutoencoderKL and kin."""
    cfg = vae.config
    for key in ("decoder_block_out_channels", "block_out_channels"):
        if cfg.get(key):
            return int(min(cfg[key]))
    return FALLBACK_DECODER_CHANNELS


def estimate(backbone, *, width: int, height: int, batch: int, frames: int = 1, guided: bool = True) -> Need:
    """Bytes a run of `batch` images (clips of `frames`) at `width` x `height` needs beyond the loaded weights."""
    f, rows, cols = backbone.token_grid(width, height, frames)
    item = backbone.dtype.itemsize
    runs = batch * (2 if guided else 1)
    latents = math.prod(backbone.latent_shape(batch, width, height, frames)) * 4
    sampling = DIT_ACTIVATIONS * runs * f * rows * cols * backbone.dit_dim * item + LATENT_COPIES * latents
    pixels = batch * frames * width * height
    vae_item = next(backbone.vae.parameters()).dtype.itemsize
    decoding = DECODER_ACTIVATIONS * pixels * decoder_channels(backbone.vae) * vae_item + 2 * pixels * 3 * 4
    return Need(sampling, decoding)


def free_bytes(device: torch.device | str) -> int | None:
    """Memory a run can still take on `device`: CUDA's free memory plus what torch holds cached; on the CPU,
    MemAvailable (psutil where installed, else /proc/meminfo). None where it cannot be known: no check then."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        import psutil  # noqa: PLC0415  (optional)

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_size(backbone, width: int, height: int, batch: int, frames: int) -> str:
    """A run's size in the names of the inputs that set it: frames for a backbone that makes clips (Sample Video has
    no batch_size), batch_size for one that makes images (Sample Image's), and for a batch of several clips."""
    size = f"width {width}, height {height}"
    if not backbone.makes_clips or batch > 1:
        size += f", batch_size {batch}"
    return size + (f", frames {frames}" if backbone.makes_clips else "")


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def check_fits(
    backbone, *, width: int, height: int, batch: int, frames: int = 1, guided: bool = True,
    stage: str = "sampling", free: FreeMemory | None = None,
) -> Need:
    """Refuse a run that cannot fit, naming its size and proposing one that does. `stage` "sampling" counts the
    decoding that follows too (refuse before a minute of sampling, not after); "decoding" counts only that.
    `free` replaces `free_bytes` (tests, or a host that knows better)."""
    available = (free or free_bytes)(backbone.device)
    need = estimate(backbone, width=width, height=height, batch=batch, frames=frames, guided=guided)
    if available is None or need.of(stage) <= available:
        return need

    def fits(w: int, h: int, b: int) -> bool:
        n = estimate(backbone, width=w, height=h, batch=b, frames=frames, guided=guided)
        return n.of(stage) <= available

    size = run_size(backbone, width, height, batch, frames)
    options = []
    step = backbone.pixels_per_token
    scale = math.sqrt(available / need.of(stage))
    w, h = (max(step, int(v * scale) // step * step) for v in (width, height))
    while (w > step or h > step) and not fits(w, h, batch):
        w, h = (max(step, int(v * 0.9) // step * step) for v in (w, h))
    if fits(w, h, batch):
        options.append(f"width {w} and height {h}")
    b = max(1, int(batch * available / need.of(stage)))
    while b > 1 and not fits(width, height, b):
        b -= 1
    if b < batch and fits(width, height, b):
        options.append(f"batch_size {b}")
    if frames > 1:
        fewer = [backbone.output_frames(n) for n in range(backbone.latent_frames(frames) - 1, 0, -1)]
        fitting = next((f for f in fewer if estimate(backbone, width=width, height=height, batch=batch, frames=f,
                                                      guided=guided).of(stage) <= available), None)
        options.append(f"frames {fitting}" if fitting is not None else "fewer frames")
    fix = f"use {' or '.join(options)}" if options else "free memory first (close other programs, unload models)"
    raise MetaCanvasError(
        f"{size} need about {_gb(need.of(stage))} of memory for {stage}, but the {backbone.device.type} has "
        f"{_gb(available)} free: {fix}"
    )


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def guarded(run: Callable[[], T], what: str) -> T:
    """`run()`, with an out-of-memory error turned into a MetaCanvasError naming `what` (the inputs) after what the
    run allocated is released. The new error is raised once the old one is fully handled and gone: its traceback
    holds the frames, and so the tensors, of the failed call (a chained or `with`-raised error would keep them)."""
    try:
        return run()
    except (RuntimeError, MemoryError) as e:
        if not _is_oom(e):
            raise
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise MetaCanvasError(
        f"ran out of memory with {what}; what the run had allocated is released. Lower these (or free memory used "
        "by other programs or models) and run again"
    )

"""Make a plan visible: the encoded canvas of each sample, PCA to three channels, shown as RGB."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import MetaCanvasError
from .plan import CanvasPlan


def canvas_to_rgb(plan: CanvasPlan, size: int = 256) -> torch.Tensor:
    """(B, size, T * size * w / h + (T - 1) * gap, 3) float in [0, 1]: one picture per sample, its T keyframes
    side by side (first to last) with a white line of `gap` = size / 32 pixels between them.

    Components are fitted over all tokens of the batch and keyframes, so colours are comparable between samples
    and keyframes: the same colour in two previews means the same direction in canvas space.
    """
    if plan.canvas is None:
        raise MetaCanvasError(
            f"this plan has no canvas: it was made with text-only ('global') weights {plan.connector_name!r}; "
            "connect a plan made with 'metacanvas' weights"
        )
    b, t, h, w, d = plan.canvas.shape
    x = plan.canvas.float().reshape(-1, d)
    x = x - x.mean(0, keepdim=True)
    if x.abs().max() == 0:  # an untrained (zero) canvas: show it as flat grey
        rgb = torch.full((x.shape[0], 3), 0.5)
    else:
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        comps = x @ v[: min(3, v.shape[0])].T
        comps = F.pad(comps, (0, 3 - comps.shape[1]))
        lo, hi = comps.amin(0), comps.amax(0)
        rgb = (comps - lo) / (hi - lo).clamp_min(1e-8)
    img = rgb.reshape(b * t, h, w, 3).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(size, max(1, round(size * w / h))), mode="nearest")
    keyframes = img.permute(0, 2, 3, 1).reshape(b, t, size, -1, 3).unbind(1)
    gap = torch.ones(b, size, max(1, size // 32), 3, device=img.device)
    parts = [keyframes[0]]
    for frame in keyframes[1:]:
        parts += [gap, frame]
    return torch.cat(parts, dim=2).contiguous()

"""The canvas on ComfyUI's own models (the native route), without importing ComfyUI.

Same plan, same connector, same arithmetic as the pack's own route (`injection.canvas_injected`): the plan already
holds part (a) of the canvas connector's output (run once, when the prompt was planned); every DiT call adds
part (b)'s residual to the patch-embedded tokens of the generated frames. The nodes (`nodes/native.py`) hang this on
ComfyUI's model patches and hand in plain tensors: the hooked tokens, the latent's shape, the diffusion model's
timestep argument and which plan each part of the batch belongs to.

A plan becomes CONDITIONING here too: a list of [text context, {"metacanvas_plan": plan}] as ComfyUI's samplers
take it, so the patch can tell the positive plan's canvas from the negative's (each cond keeps its dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backbones.native import NativeLayout
from .checkpoints import MetaCanvasWeights
from .errors import MetaCanvasError
from .plan import CanvasPlan

PLAN_KEY = "metacanvas_plan"  # where a CONDITIONING entry carries its plan
STEP_KEY = "metacanvas_step"  # transformer_options: this call's canvas, noise levels and given frames
PLANS_KEY = "metacanvas_plans"  # transformer_options: cond uuid -> plan, for the current sampling run


def plan_conditioning(positive: CanvasPlan, negative: CanvasPlan, weights: MetaCanvasWeights, lay: NativeLayout
                      ) -> tuple[list[list], list[list]]:
    """Positive and negative CONDITIONING for ComfyUI's own model of `lay`'s architecture: the text connector's
    output as the model's text context, zeroed past each prompt as the pack's adapter feeds its DiT (Wan's
    cross-attention takes no mask), each with its plan attached.

    Both are padded to the longer of the two, as the pack's own CFG batch pads them (`sampling._cfg_plan`): a DiT
    whose cross-attention takes no mask sees the padding (Wan embeds a zero token as its text bias), so the native
    route gives the pack's output only with the same lengths; equal lengths also let ComfyUI batch both in one call.
    """
    for p in (positive, negative):
        check_plan(p, weights, "Plan to CONDITIONING")
    length = max(positive.text.shape[1], negative.text.shape[1])
    return tuple([[lay.text_context(p.text, p.text_mask, length), {**lay.cond_extras(p.text, p.text_mask, weights.backbone_config),
                                                                     PLAN_KEY: p}]]
                 for p in (positive, negative))


def check_plan(plan: CanvasPlan, weights: MetaCanvasWeights, where: str) -> None:
    if plan.connector_name != weights.name:
        raise MetaCanvasError(
            f"{where}: the plan was made with MetaCanvas weights {plan.connector_name!r}, not {weights.name!r}: plan "
            "with the same weights that are applied to the MODEL"
        )
    if plan.canvas is not None and plan.canvas.shape[1] != weights.config.grid.frames:
        raise MetaCanvasError(
            f"{where}: the plan's canvas has {plan.canvas.shape[1]} keyframes but the weights {weights.name!r} were "
            f"trained with {weights.config.grid.frames}: plan with the same MetaCanvas weights"
        )


@dataclass
class StepCanvas:
    """What one DiT call needs: the canvas on the token grid per batch row, the rows' noise levels and a 0/1 factor
    per token that keeps given (clean) frames untouched."""

    canvas: torch.Tensor  # (B, N, D)
    level: torch.Tensor  # (B,) in the pack's 0..1000 timestep scale
    keep: torch.Tensor  # (B, N, 1)
    grid: tuple[int, int, int]


class NativeCanvas:
    """The canvas connector's per-step part on a native model's token sequence."""

    def __init__(self, weights: MetaCanvasWeights, strength: float, lay: NativeLayout, fuser=None) -> None:
        weights.require_canvas("to add to a MODEL", "use 'metacanvas' weights, or sample the text-only baseline "
                                                    "without Apply MetaCanvas")
        self.weights, self.strength, self.layout = weights, float(strength), lay
        # (the patch hands in its own copy, which ComfyUI's model management moves between devices)
        self.fuser = fuser if fuser is not None else weights.connector.canvas_fuser
        self._resampled: dict[tuple, torch.Tensor] = {}

    def step(self, plans: list[CanvasPlan], rows_per_plan: int, x_shape: tuple[int, ...], patch_size, timestep,
             multiplier: float, device, where: str = "Apply MetaCanvas to MODEL") -> StepCanvas:
        """`plans[i]` serves rows i * rows_per_plan ... of the batch (ComfyUI's cond chunks)."""
        grid = self.layout.token_grid(x_shape, patch_size)
        frames = grid[0]
        rows = []
        for plan in plans:
            check_plan(plan, self.weights, where)
            if plan.canvas is None:
                raise MetaCanvasError(f"{where}: the plan of {plan.prompts!r} has no canvas: plan with 'metacanvas' "
                                      "weights")
            key = (id(plan.canvas), grid)
            if key not in self._resampled:  # once per plan and grid, not every step
                self._resampled[key] = self.weights.connector.canvas_for_grid(plan.canvas, *grid)
            c = self._resampled[key]
            if c.shape[0] not in (1, rows_per_plan):
                raise MetaCanvasError(f"{where}: a plan of {c.shape[0]} prompts cannot drive a batch of "
                                      f"{rows_per_plan}; plan 1 or {rows_per_plan}")
            rows.append(c.expand(rows_per_plan, -1, -1))
        canvas = torch.cat(rows).to(device)
        batch = canvas.shape[0]
        level, clean = self.layout.noise_levels(timestep.to(device), batch, frames, multiplier)
        per_frame = grid[1] * grid[2]
        keep = (~clean).repeat_interleave(per_frame, dim=1)[..., None].float()
        return StepCanvas(canvas, level, keep, grid)

    def add(self, tokens: torch.Tensor, step: StepCanvas) -> torch.Tensor:
        """`tokens` (B, N_all, D) with the residual added to the first N (the generated grid) of each row."""
        if self.strength == 0:
            return tokens
        n = self.layout.generated_tokens(step.grid)
        if tokens.shape[0] != step.canvas.shape[0] or tokens.shape[1] < n:
            raise MetaCanvasError(f"the model's tokens {tuple(tokens.shape)} do not fit the canvas "
                                  f"{tuple(step.canvas.shape)} on a {step.grid} grid")
        if tokens.shape[-1] != step.canvas.shape[-1]:
            raise MetaCanvasError(
                f"the model is {tokens.shape[-1]} wide but the MetaCanvas weights {self.weights.name!r} were "
                f"trained on a DiT {step.canvas.shape[-1]} wide: load the model these weights were trained with"
            )
        param = next(self.fuser.parameters())
        gen = tokens[:, :n]
        _, rows, cols = step.grid
        with torch.no_grad():
            residual = self.fuser(gen.to(param.device, param.dtype), step.canvas.to(param.device, param.dtype),
                                  step.level.to(param.device), rows, cols)
        residual = (residual * step.keep.to(residual.device, residual.dtype)).to(tokens.device, tokens.dtype)
        gen = gen + self.strength * residual
        return gen if tokens.shape[1] == n else torch.cat([gen, tokens[:, n:]], 1)

    def to(self, device) -> "NativeCanvas":
        self._resampled = {k: v.to(device) for k, v in self._resampled.items()}
        return self

"""A plan: everything that depends only on the prompt, computed once per generation.

The planner runs once; the text connector turns its text states into the DiT's conditioning and part (a) of the
canvas connector turns its canvas states into the encoded canvas. Sampling then only adds per-step work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checkpoints import MetaCanvasWeights
from .errors import MetaCanvasError
from .planner import Planner
from .visual_inputs import Visual


@dataclass
class CanvasPlan:
    prompts: list[str]
    text: torch.Tensor  # (B, L, caption_channels): the DiT's text conditioning
    text_mask: torch.Tensor  # (B, L)
    canvas: torch.Tensor | None  # (B, T, h, w, dit_dim): encoded canvas, None for the global baseline
    connector_name: str
    canvas_states: torch.Tensor | None = None  # (B, K, D_planner) raw MLLM canvas embeddings, for previews
    unconditional: "CanvasPlan | None" = None  # the empty-prompt plan CFG falls back to without a negative

    @property
    def batch(self) -> int:
        return self.text.shape[0]


def make_plan(
    planner: Planner,
    loaded: MetaCanvasWeights,
    prompts: list[str],
    text_prompts: list[str] | None = None,
    with_unconditional: bool = False,
    visuals: list[list[Visual]] | None = None,
) -> CanvasPlan:
    """Plan `prompts`. `visuals[i]` lists the images / clips prompt i is about (the source image, the first frame,
    references, a source clip), which the planner sees before the prompt (see `Planner.encode`).
    `text_prompts` (default: the same) may differ, e.g. "" to give the DiT no text at all while the canvas still
    carries the prompt's plan; they are encoded without the visuals. `with_unconditional` also plans the empty
    prompt without visuals (what caption dropout trained for CFG) and attaches it."""
    loaded.check_planner(planner, where="Plan Canvas: connector")
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise MetaCanvasError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    conn = loaded.connector
    with torch.no_grad():
        tokens = conn.canvas_tokens if conn.use_canvas else None
        out = planner.encode(prompts, tokens, conn.config.grid, conn.canvas_lora, visuals=visuals)
        text_states, text_mask = out.text_states, out.text_mask
        if text_prompts is not None and text_prompts != prompts:
            alt = planner.encode(text_prompts)
            text_states, text_mask = alt.text_states, alt.text_mask
        dtype = next(conn.parameters()).dtype
        text = conn.text_connector(text_states.to(dtype))
        canvas = conn.canvas_encoder(out.canvas_states.to(dtype)) if conn.use_canvas else None
    uncond = make_plan(planner, loaded, [""]) if with_unconditional else None
    return CanvasPlan(list(prompts), text, text_mask, canvas, loaded.name, out.canvas_states, uncond)

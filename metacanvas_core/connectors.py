"""MetaCanvas's trainable parts: canvas tokens, the text connector and the two-part canvas connector.

Built from diffusers blocks (`BasicTransformerBlock`, `SanaTransformerBlock`, `AdaLayerNormSingle`); the only
attention written here is none. Both output projections of the canvas connector start at zero, so an untrained
connector leaves the backbone exactly as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.normalization import AdaLayerNormSingle
from diffusers.models.transformers.sana_transformer import SanaTransformerBlock
from torch import nn

from .canvas_grid import CanvasGrid, resample_canvas
from .canvas_lora import CanvasLoRA


@dataclass
class ConnectorConfig:
    planner_hidden: int  # the MLLM's hidden size
    dit_dim: int  # the DiT's inner dimension (patch embedding width)
    caption_channels: int  # what the DiT's caption projection takes
    canvas_grid: list[int] = field(default_factory=lambda: [1, 16, 16])  # keyframes, rows, cols
    heads: int = 2
    head_dim: int = 32
    text_dropout: float = 0.1
    use_canvas: bool = True  # False: the global-conditioning baseline (text connector only)
    # Optional canvas-only LoRA on the MLLM: {"rank", "alpha", "targets": {layer name: [in, out]}} (see canvas_lora).
    planner_lora: dict | None = None
    # Clip time between keyframes the canvas was trained with (`canvas_grid.keyframe_seconds`); only k > 1 uses it.
    keyframe_seconds: float = 1.0

    @property
    def grid(self) -> CanvasGrid:
        return CanvasGrid(*self.canvas_grid, keyframe_seconds=self.keyframe_seconds)

    def to_dict(self) -> dict:
        return asdict(self)


class TextConnector(nn.Module):
    """2-layer MLP (4x expansion, dropout) from the MLLM's text states to the DiT's text conditioning."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, 4 * d_in), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(4 * d_in, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CanvasEncoder(nn.Module):
    """Part (a): one plain transformer block over the canvas embeddings, then a zero-initialised linear.

    Depends only on the prompt, so it runs once per generation, never per denoising step.
    """

    def __init__(self, cfg: ConnectorConfig) -> None:
        super().__init__()
        d = cfg.planner_hidden
        self.block = BasicTransformerBlock(d, max(1, d // cfg.head_dim), min(cfg.head_dim, d))
        self.proj = nn.Linear(d, cfg.dit_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.grid = cfg.grid

    def forward(self, canvas_states: torch.Tensor) -> torch.Tensor:
        """(B, K, D_planner) -> (B, T, h, w, D_dit) on the canvas grid."""
        x = self.proj(self.block(canvas_states))
        return x.reshape(x.shape[0], self.grid.frames, self.grid.height, self.grid.width, x.shape[-1])


class CanvasFuser(nn.Module):
    """Part (b): canvas + patch-embedded latents -> one SANA block (linear attention, Mix-FFN, AdaLN-single on
    the timestep, no cross-attention) -> zero-initialised linear: the residual for the latents entering the DiT.
    """

    def __init__(self, cfg: ConnectorConfig) -> None:
        super().__init__()
        d = cfg.dit_dim
        self.time_embed = AdaLayerNormSingle(d)
        # diffusers' SanaTransformerBlock builds its FFN norm only alongside cross-attention; drop the attention.
        self.block = SanaTransformerBlock(
            d, max(1, d // cfg.head_dim), min(cfg.head_dim, d), cross_attention_dim=d,
            num_cross_attention_heads=1, cross_attention_head_dim=d, attention_bias=False,
        )
        self.block.attn2 = None
        self.proj = nn.Linear(d, d)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, latents: torch.Tensor, canvas: torch.Tensor, timestep: torch.Tensor, height: int, width: int):
        """latents, canvas: (B, N, D) on a `height` x `width` grid per frame (N = frames * height * width);
        timestep: (B,). The block runs per frame."""
        b, n, d = latents.shape
        frames = n // (height * width)
        t_mod, _ = self.time_embed(timestep.flatten(), batch_size=b, hidden_dtype=latents.dtype)
        x = (latents + canvas).reshape(b * frames, height * width, d)
        t_mod = t_mod.repeat_interleave(frames, dim=0)
        x = self.block(x, timestep=t_mod, height=height, width=width)
        return self.proj(x).reshape(b, n, d)


class MetaCanvasConnector(nn.Module):
    """Everything MetaCanvas trains besides the DiT: canvas tokens, text connector, canvas connector."""

    def __init__(self, cfg: ConnectorConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_connector = TextConnector(cfg.planner_hidden, cfg.caption_channels, cfg.text_dropout)
        if cfg.use_canvas:
            # Small init, like word embeddings, so the frozen MLLM sees in-distribution inputs.
            self.canvas_tokens = nn.Parameter(torch.randn(cfg.grid.num_tokens, cfg.planner_hidden) * 0.02)
            self.canvas_encoder = CanvasEncoder(cfg)
            self.canvas_fuser = CanvasFuser(cfg)
        self.canvas_lora = CanvasLoRA(**cfg.planner_lora) if cfg.use_canvas and cfg.planner_lora else None

    @property
    def use_canvas(self) -> bool:
        return self.config.use_canvas

    def canvas_for_grid(self, canvas: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """Encoded canvas (B, T, h, w, D) resampled to the DiT's token grid and flattened to (B, N, D)."""
        x = resample_canvas(canvas, frames, height, width)
        return x.reshape(x.shape[0], -1, x.shape[-1])

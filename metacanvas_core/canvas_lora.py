"""Low-rank adapters on the frozen MLLM that act on the canvas positions only (the paper's optional planner LoRA).

Canvas tokens alone are just learnable *inputs* to a frozen model; a small MLLM can barely route "what goes
where" from the prompt into them. These adapters let the planner's own linear layers compute differently at the
canvas positions. They are applied by forward hooks on the real modules (no forked forward) and add nothing to
the positions before the canvas: since the canvas comes after the prompt and attention is causal, the text
states (and so the DiT's text conditioning) are bit-identical with and without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import MetaCanvasError

# The linear layers of each Qwen2.5-VL decoder layer (attention and MLP), as named in `transformers`.
TARGET_SUFFIXES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def lora_targets(language_model: nn.Module) -> dict[str, list[int]]:
    """{module name: [in_features, out_features]} of every adapted linear layer of a planner's language model."""
    return {name: [m.in_features, m.out_features] for name, m in language_model.named_modules()
            if isinstance(m, nn.Linear) and name.endswith(TARGET_SUFFIXES)}


class CanvasLoRA(nn.Module):
    """`up(down(x)) * alpha / rank` added to each target layer's output at the canvas positions."""

    def __init__(self, targets: dict[str, list[int]], rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1 or not targets:
            raise MetaCanvasError(
                f"a canvas LoRA needs rank >= 1 and target layers, got rank {rank}, {len(targets)} targets"
            )
        self.targets, self.scale = dict(targets), alpha / rank
        # ModuleDict keys may not contain dots.
        self.down = nn.ModuleDict({_key(n): nn.Linear(i, rank, bias=False) for n, (i, _) in targets.items()})
        self.up = nn.ModuleDict({_key(n): nn.Linear(rank, o, bias=False) for n, (_, o) in targets.items()})
        for up in self.up.values():
            nn.init.zeros_(up.weight)  # starts as the identity, like the rest of the connector

    def check(self, language_model: nn.Module, planner_name: str, where: str = "connector") -> None:
        """The planner must have exactly the layers (and shapes) these adapters were trained on."""
        have = lora_targets(language_model)
        wrong = sorted(n for n, shape in self.targets.items() if have.get(n) != list(shape))
        if wrong:
            raise MetaCanvasError(
                f"{where}: its canvas LoRA was trained on a planner with layers {wrong[:3]} shaped "
                f"{[self.targets[n] for n in wrong[:3]]}, but planner {planner_name!r} has "
                f"{[have.get(n) for n in wrong[:3]]}: load the planner these weights were made for"
            )

    @contextmanager
    def applied(self, language_model: nn.Module, canvas_start: int) -> Iterator[None]:
        """Hook every target layer for the duration of one forward; positions >= `canvas_start` get the update."""
        modules = dict(language_model.named_modules())
        handles = [modules[name].register_forward_hook(self._hook(_key(name), canvas_start)) for name in self.targets]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, key: str, start: int):
        down, up, scale = self.down[key], self.up[key], self.scale

        def add_update(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0][:, start:]
            delta = up(down(x.to(down.weight.dtype))).to(output.dtype) * scale
            return torch.cat([output[:, :start], output[:, start:] + delta], dim=1)

        return add_update


def _key(name: str) -> str:
    return name.replace(".", "__")

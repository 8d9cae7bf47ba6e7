"""What a training task is: the trainer asks it for samples, batches, a loss and what to export; nothing else.

A task owns the models it trains and the frozen ones it only uses (planner, VAE). The trainer owns everything
that is the same for every task: processes, precision, accumulation, optimizer, LR schedule, average, state, log.

A later task adds one file here: text-to-video draws clips instead of images (the backbone adapter's `encode` turns
them into latents and `token_grid` gives frames); image-to-video and editing put their conditioning latents (first
frame, FLUX Kontext reference) and the images the planner should see into `batch`, and their `loss` passes them
to the adapter's `predict` under the same `canvas_injected`; in-context tasks draw several examples per sample.

Randomness: sample `i` of the global batch of step `s` draws everything random about it (which data, dropout,
noise level, noise) from its own generator, `sample_rng(seed, s, i)`. So a resumed run repeats the draws of an
uninterrupted one, and N processes that split a global batch see exactly the samples one process would.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


def sample_rng(seed: int, step: int, index: int) -> np.random.Generator:
    """The generator of global sample `index` of optimizer step `step`."""
    return np.random.default_rng([seed, step, index])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch generator seeded from `rng` (noise is drawn on the CPU so every device draws the same)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


@dataclass
class Sample:
    """One drawn example: its tensors/fields, and whether reading it hit a broken file (then `skipped` names
    the files passed over to reach it)."""

    data: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


class Task(ABC):
    """One thing the trainer can train. Subclasses register CLI flags, build models, draw samples and score them."""

    name: ClassVar[str]
    validates: ClassVar[bool] = False  # `validate` samples (--validation-prompt)

    @classmethod
    @abstractmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The task's own flags (the trainer's common ones are already there)."""

    @classmethod
    def check_arguments(cls, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Reject flag combinations that make no sense for this task (`parser.error`)."""

    @abstractmethod
    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        """Build or load the models. `dtype` is what frozen models run in (the trained ones stay float32)."""

    @abstractmethod
    def trained_modules(self) -> dict[str, nn.Module]:
        """The modules holding trained parameters, by name (they are wrapped for DDP/FSDP/DeepSpeed together)."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimizer groups over the trained parameters; a group may carry an `lr_scale` (default 1)."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        """Global sample `index` of `step`: its data and all its random draws, from `rng` only."""

    @abstractmethod
    def batch(self, samples: list[Sample]) -> dict[str, Any]:
        """Samples -> model inputs on the task's device (frozen encoders run here, without gradients)."""

    @abstractmethod
    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean loss over the batch's samples (each sample weighs the same, so split batches average exactly)."""

    @abstractmethod
    def export(self, state: dict[str, dict[str, torch.Tensor]], out: Path, recipe: dict) -> list[Path]:
        """Write the trained weights (`state`: full state dict per trained module, on the CPU) under `out`;
        return the files/folders written."""

    def recipe(self) -> dict:
        """The task's settings, recorded in what it exports."""
        return {}

    def validate(self, prompts: list[str], steps: int, cfg: float, seed: int) -> list[torch.Tensor]:
        """Sample `prompts` with the current weights as the task's sampling does: one (F, H, W, 3) tensor in [0, 1]
        per prompt (F = 1 for an image). Only tasks that `validates`."""
        raise NotImplementedError(f"train {self.name} has no validation sampling")


class TrainedModules(nn.Module):
    """The task's trained modules as one module whose forward is the task's loss: what accelerate wraps (DDP
    averages gradients of everything a forward used)."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(task.trained_modules())
        object.__setattr__(self, "task", task)  # not a submodule: its frozen models stay out of the wrapper

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.task.loss(batch)

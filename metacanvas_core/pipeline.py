"""Every task with canvas planning, end to end: its inputs (as its definition builds them), plan once, sample,
decode. Orchestration only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import load_backbone
from .builtin import PLANNER
from .checkpoints import load_connector
from .errors import MetaCanvasError
from .limits import checked
from .plan import CanvasPlan, make_plan
from .planner import Planner
from .sampling import InjectedBackbone, ProgressCallback, latents_to_images, sample
from .schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, make_scheduler
from . import tasks
from .world import clips


@dataclass
class GenerationResult:
    images: torch.Tensor  # (B, H, W, 3) in [0, 1]; a clip's frames one after another (B * F, H, W, 3)
    latents: torch.Tensor
    plan: CanvasPlan


class MetaCanvasPipeline:
    def __init__(self, planner: Planner, model: InjectedBackbone) -> None:
        if model.connector is None:
            raise MetaCanvasError("the pipeline needs a backbone injected with MetaCanvas weights (a connector)")
        self.planner, self.model = planner, model

    @classmethod
    def from_pretrained(
        cls, planner: str | Path, backbone: str | Path, weights: str | Path, strength: float = 1.0,
        device: str = "cpu", dtype: torch.dtype = torch.float32,
    ) -> "MetaCanvasPipeline":
        bb = load_backbone(backbone, dtype=dtype, device=device)
        loaded = load_connector(weights, device=device, dtype=dtype)
        planner_model = Planner.from_pretrained(planner, dtype=dtype, device=device)
        return cls(planner_model, InjectedBackbone(bb).inject(loaded, strength))

    @classmethod
    def builtin(cls, method: str = "metacanvas", task: str = "t2i", device: str = "cpu") -> "MetaCanvasPipeline":
        """The built-in tiny models of `method` (e.g. metacanvas, global) for `task`."""
        backbone, weights = tasks.task(task).builtin(method)
        return cls.from_pretrained(PLANNER, backbone, weights, device=device)

    def plan(self, prompts: list[str], text_prompts: list[str] | None = None, visuals=None) -> CanvasPlan:
        return make_plan(self.planner, self.model.connector, prompts, text_prompts, visuals=visuals)

    def __call__(
        self,
        prompt: str | list[str],
        *,
        task: str | None = None,
        given=None,
        fps: float = clips.FPS,
        where: str | None = None,
        negative_prompt: str = "",
        width: int | None = None,
        height: int | None = None,
        frames: int | None = None,
        steps: int = 20,
        cfg: float = 3.0,
        seed: int | list[int] = 0,
        text_prompt: str | list[str] | None = None,
        sampler: str = DEFAULT_SAMPLER,
        shift: float = DEFAULT_SHIFT,
        callback: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate for `task` (default: the one the weights were trained for; `tasks.TASKS` lists them) from the
        prompts and `given`, what the task takes besides them: a start image, source image(s) to edit, a source clip
        (at `fps`) or reference images, as ComfyUI IMAGE tensors; `where` names it in messages (e.g. a flag). Width,
        height and frames default to the task's (a clip to edit: its own)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        empty = [i for i, p in enumerate(prompts) if not p.strip()]
        if empty:
            raise MetaCanvasError("prompt is empty: describe the image, e.g. 'a red circle at top left'")
        texts = text_prompt
        if texts is not None:
            texts = [texts] * len(prompts) if isinstance(texts, str) else list(texts)
        checked(steps=steps, cfg=cfg, batch_size=len(prompts))  # before planning
        bb = self.model.backbone
        scheduler = make_scheduler(bb.scheduler, sampler, shift)
        definition = tasks.task_of_weights(self.model.connector) if task is None else tasks.task(task)
        inputs = definition.inputs(bb, given, width=width, height=height, frames=frames, samples=len(prompts),
                                   fps=fps, weights=self.model.connector, where=where)
        positive = self.plan(prompts, texts, inputs.seen_by(len(prompts), where or "given"))
        negative = self.plan([negative_prompt])  # "" is the unconditional plan caption dropout trained
        latents = sample(
            self.model, positive, negative, width=inputs.width, height=inputs.height, frames=inputs.frames,
            conditioning=inputs.conditioning, steps=steps, cfg=cfg, seed=seed,
            batch=len(prompts), callback=callback, cancel=cancel, scheduler=scheduler,
        )
        return GenerationResult(latents_to_images(bb, latents), latents, positive)

"""Text-to-image, text/image-to-video and image editing with canvas planning, end to end: plan once, sample,
decode. Orchestration only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import load_backbone
from .backbones.base import Conditioning
from .builtin import PLANNER, T2I_MODELS
from .checkpoints import load_connector
from .pixels import start_image_pixels
from .editing import require_source, source_conditioning, source_visuals
from .errors import MetaCanvasError
from .limits import checked
from .plan import CanvasPlan, make_plan
from .planner import Planner
from .sampling import InjectedBackbone, ProgressCallback, latents_to_images, sample
from .schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, make_scheduler
from .video_tasks import VideoTaskInputs


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
    def builtin(cls, method: str = "metacanvas", device: str = "cpu") -> "MetaCanvasPipeline":
        backbone, weights = T2I_MODELS.get(method, "t2i", "a SANA diffusers folder")
        return cls.from_pretrained(PLANNER, backbone, weights, device=device)

    def plan(self, prompts: list[str], text_prompts: list[str] | None = None, visuals=None) -> CanvasPlan:
        return make_plan(self.planner, self.model.connector, prompts, text_prompts, visuals=visuals)

    def __call__(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str = "",
        width: int = 32,
        height: int = 32,
        frames: int = 1,
        start_image: torch.Tensor | None = None,
        source_image: torch.Tensor | None = None,
        video_inputs: VideoTaskInputs | None = None,
        steps: int = 20,
        cfg: float = 3.0,
        seed: int | list[int] = 0,
        text_prompt: str | list[str] | None = None,
        sampler: str = DEFAULT_SAMPLER,
        shift: float = DEFAULT_SHIFT,
        callback: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        empty = [i for i, p in enumerate(prompts) if not p.strip()]
        if empty:
            raise MetaCanvasError("prompt is empty: describe the image, e.g. 'a red circle at top left'")
        texts = text_prompt
        if texts is not None:
            texts = [texts] * len(prompts) if isinstance(texts, str) else list(texts)
        checked(steps=steps, cfg=cfg, width=width, height=height, batch_size=len(prompts))  # before planning
        bb = self.model.backbone
        bb.token_grid(width, height, frames)
        scheduler = make_scheduler(bb.scheduler, sampler, shift)
        conditioning, visuals = None, None
        if start_image is not None:  # (1 or B, H, W, 3) in [0, 1]: the clips' first frames (image-to-video)
            several = start_image.ndim == 4 and start_image.shape[0] == len(prompts) > 1
            images = start_image.split(1) if several else [start_image]
            fitted = [start_image_pixels(im, width, height) for im in images]
            pixels = torch.cat(fitted).to(bb.device, bb.dtype)
            with torch.no_grad():
                conditioning = Conditioning(first_frames=bb.encode(pixels))
            # The planner sees each prompt's start image, so the plan knows what is where (as Plan Canvas's image).
            shown = [((p[0].movedim(0, -1) + 1) / 2).clamp(0, 1) for p in fitted]
            visuals = [[shown[i if several else 0]] for i in range(len(prompts))]
        require_source(self.model.connector, source_image is not None, "source_image",
                       "give the image to edit (FLUX.1-Kontext reference), or load text-to-image weights")
        if source_image is not None:  # (1 or B, H, W, 3) in [0, 1]: the image to edit, seen by planner and DiT
            if conditioning is not None:
                raise MetaCanvasError("give a start image (image-to-video) or a source image (editing), not both")
            conditioning = source_conditioning(bb, source_image, width, height, "source_image")
            visuals = source_visuals(source_image, len(prompts), "source_image")
        if video_inputs is not None:  # video editing / in-context: from video_tasks, seen by the planner and the DiT
            if conditioning is not None:
                raise MetaCanvasError("give a source clip or reference images, not also a start or source image")
            asked, built = (width, height, frames), (video_inputs.width, video_inputs.height, video_inputs.frames)
            if asked != built:
                raise MetaCanvasError(f"width, height, frames {asked} differ from the video inputs' {built}: "
                                      "generate at the size the inputs were built for")
            conditioning, visuals = video_inputs.conditioning, [list(video_inputs.visuals)] * len(prompts)
        positive = self.plan(prompts, texts, visuals)
        negative = self.plan([negative_prompt])  # "" is the unconditional plan caption dropout trained
        latents = sample(
            self.model, positive, negative, width=width, height=height, frames=frames, conditioning=conditioning,
            steps=steps, cfg=cfg, seed=seed,
            batch=len(prompts), callback=callback, cancel=cancel, scheduler=scheduler,
        )
        return GenerationResult(latents_to_images(bb, latents), latents, positive)

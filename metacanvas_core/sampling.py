"""Rectified-flow sampling with the backbone's flow-matching scheduler (or a chosen one), CFG, progress and cancel.

One loop for images and clips: latents may carry a frame axis, and a `Conditioning` (e.g. image-to-video's clean
first frame) goes to the adapter, which knows how its model takes it and builds the model's timestep argument.

`InjectedBackbone` is to a backbone what a LoRA-patched MODEL is to ComfyUI: the shared base modules plus the
MetaCanvas weights and strength to apply while sampling. Patches are applied on entry and undone on exit, so one
loaded backbone serves injected and plain branches of a graph alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from .backbones.base import NO_CONDITIONING, BackboneAdapter, Conditioning
from .checkpoints import MetaCanvasWeights
from .errors import MetaCanvasError
from .injection import canvas_injected
from .limits import BATCH, CFG, HEIGHT, SEED, STEPS, STRENGTH, WIDTH
from .memory import check_fits, guarded, run_size
from .plan import CanvasPlan
from .schedulers import prepared

ProgressCallback = Callable[[int, int, torch.Tensor], None]


class SamplingCancelled(RuntimeError):
    """Raised between steps when the cancel check says so."""


@dataclass(frozen=True)
class InjectedBackbone:
    backbone: BackboneAdapter
    connector: MetaCanvasWeights | None = None
    strength: float = 1.0

    def inject(self, loaded: MetaCanvasWeights, strength: float = 1.0) -> "InjectedBackbone":
        loaded.check_backbone(self.backbone, where="Inject into Backbone: connector")
        return InjectedBackbone(self.backbone, loaded, STRENGTH.check(strength))

    @contextmanager
    def applied(self, plan: CanvasPlan, grid: tuple[int, int, int], clean_frames: int = 0) -> Iterator[None]:
        """Swap in the connector's DiT weights and hook in the canvas for the duration of one sampling run.
        The first `clean_frames` frames of `grid` are given (conditioning), never canvas-steered."""
        with ExitStack() as stack:
            if self.connector is not None:
                stack.enter_context(dit_applied(self.backbone, self.connector))
                use_canvas = self.connector.config.use_canvas and plan.canvas is not None and self.strength != 0
                if use_canvas:
                    conn = self.connector.connector
                    keyframes, trained = plan.canvas.shape[1], conn.config.grid.frames
                    if keyframes != trained:
                        raise MetaCanvasError(
                            f"the plan's canvas has {keyframes} keyframes but the injected weights "
                            f"{self.connector.name!r} were trained with {trained}: plan with the same MetaCanvas "
                            "weights"
                        )
                    canvas = conn.canvas_for_grid(plan.canvas, *grid).to(self.backbone.device)
                    stack.enter_context(canvas_injected(
                        self.backbone, conn.canvas_fuser, canvas, grid, self.strength, clean_frames))
            yield


@contextmanager
def dit_applied(backbone: BackboneAdapter, weights: MetaCanvasWeights) -> Iterator[None]:
    """The weights' DiT part in effect for one sampling run: a LoRA switched on (loaded onto the backbone's DiT as
    an adapter of its own the first time; off again afterwards, so plain and other weights' runs see the DiT as it
    was), a fine-tuned transformer used in place of the backbone's (loaded once), or format 1's tensors swapped in.
    Nothing is copied per run."""
    kind = weights.dit.kind
    if kind == "inline":
        with weights_swapped(backbone.transformer, weights.dit_state):
            yield
    elif kind == "transformer":
        own = backbone.transformer
        backbone.transformer = weights.dit_module(own)
        try:
            yield
        finally:
            backbone.transformer = own
    elif kind == "lora":
        dit = backbone.transformer
        name = "metacanvas_" + hashlib.sha1(str(weights.dit.path).encode()).hexdigest()[:12]  # one adapter per file
        if name not in (getattr(dit, "peft_config", None) or {}):
            dit.load_lora_adapter(weights.dit_lora_state(), adapter_name=name, prefix="transformer")
        dit.enable_lora()
        dit.set_adapters([name])
        try:
            yield
        finally:
            dit.disable_lora()
    else:
        yield


@contextmanager
def weights_swapped(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """Format 1 weights: load `state` into `module` and put the original tensors back afterwards."""
    if not state:
        yield
        return
    own = module.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise MetaCanvasError(f"the MetaCanvas weights carry DiT tensors this backbone does not have: {unknown[:5]}")
    saved = {k: own[k].clone() for k in state}
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)


def _pad_text(text: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - text.shape[1]
    if extra == 0:
        return text, mask
    return (
        torch.cat([text, text.new_zeros(text.shape[0], extra, text.shape[2])], 1),
        torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1),
    )


def _batched(plan: CanvasPlan, batch: int) -> CanvasPlan:
    if plan.batch == batch:
        return plan
    if plan.batch != 1:
        raise MetaCanvasError(f"a plan of {plan.batch} prompts cannot drive a batch of {batch}; plan 1 or {batch}")
    rep = lambda t: None if t is None else t.expand(batch, *t.shape[1:])  # noqa: E731
    return CanvasPlan(plan.prompts * batch, rep(plan.text), rep(plan.text_mask), rep(plan.canvas), plan.connector_name)


def _cfg_plan(pos: CanvasPlan, neg: CanvasPlan) -> CanvasPlan:
    """Negative and positive plans stacked along the batch for one DiT call per step."""
    length = max(pos.text.shape[1], neg.text.shape[1])
    nt, nm = _pad_text(neg.text, neg.text_mask, length)
    pt, pm = _pad_text(pos.text, pos.text_mask, length)
    canvas = None
    if pos.canvas is not None and neg.canvas is not None:
        canvas = torch.cat([neg.canvas, pos.canvas])
    elif pos.canvas is not None or neg.canvas is not None:
        raise MetaCanvasError("positive and negative plans must come from the same connector (one has a canvas)")
    return CanvasPlan(neg.prompts + pos.prompts, torch.cat([nt, pt]), torch.cat([nm, pm]), canvas, pos.connector_name)


def initial_noise(shape: tuple[int, ...], seed: int | list[int]) -> torch.Tensor:
    """Noise from a CPU generator, so a seed gives the same noise on any device. One seed draws the whole
    batch (as ComfyUI does); a list gives every sample its own seed, independent of the batch it is in."""
    if isinstance(seed, int):
        return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    if len(seed) != shape[0]:
        raise MetaCanvasError(f"got {len(seed)} seeds for a batch of {shape[0]}")
    return torch.cat([initial_noise((1, *shape[1:]), int(s)) for s in seed])


def sample(
    model: InjectedBackbone,
    positive: CanvasPlan,
    negative: CanvasPlan | None = None,
    *,
    width: int,
    height: int,
    frames: int = 1,
    conditioning: Conditioning | None = None,
    steps: int = 20,
    cfg: float = 4.0,
    seed: int | list[int] = 0,
    batch: int = 1,
    callback: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    scheduler=None,
) -> torch.Tensor:
    """Denoise from seeded noise to latents (B, C, h, w), or (B, C, F, h, w) for `frames` > 1 on a video
    backbone. Returns scaled latents of the backbone's VAE, with any conditioning frames in place.

    Without a `negative` plan, CFG uses the positive plan's attached unconditional plan, if it has one.
    `scheduler` (e.g. from `schedulers.make_scheduler`) replaces the backbone folder's own (copied per run).
    """
    negative = negative if negative is not None else positive.unconditional
    bb = model.backbone
    steps, cfg, batch, _ = STEPS.check(steps), CFG.check(cfg), BATCH.check(batch), STRENGTH.check(model.strength)
    seed = [SEED.check(s) for s in seed] if isinstance(seed, (list, tuple)) else SEED.check(seed)
    bb.check_size(WIDTH.check(width), HEIGHT.check(height))
    if model.connector is not None and positive.connector_name != model.connector.name:
        raise MetaCanvasError(
            f"the plan was made with connector {positive.connector_name!r} but the backbone is injected with "
            f"{model.connector.name!r}: use the same MetaCanvas weights for Plan Canvas and Inject into Backbone"
        )
    for p in (positive, negative):
        if p is None:
            continue
        if not torch.isfinite(p.text).all() or (p.canvas is not None and not torch.isfinite(p.canvas).all()):
            raise MetaCanvasError("the plan contains NaN or infinite values: re-plan, or check the connector weights")
        if p.connector_name != positive.connector_name:
            raise MetaCanvasError(
                f"the negative plan was made with connector {p.connector_name!r} but the positive with "
                f"{positive.connector_name!r}: make both with the same MetaCanvas weights"
            )
    if model.connector is None and positive.canvas is not None:
        raise MetaCanvasError(
            f"the plan carries a canvas from {positive.connector_name!r} but the backbone has no MetaCanvas weights: "
            "inject the same connector into the backbone first (the Inject into Backbone node; strength 0 turns "
            "the canvas off)"
        )
    positive = _batched(positive, batch)
    use_cfg = negative is not None and cfg != 1.0
    check_fits(bb, width=width, height=height, batch=batch, frames=frames, guided=use_cfg)  # before allocating
    if model.connector is not None:
        model.connector.warn_if_untrained(width, height, frames)
    plan = _cfg_plan(positive, _batched(negative, batch)) if use_cfg else positive
    grid = bb.token_grid(width, height, frames)
    shape = bb.latent_shape(batch, width, height, frames)
    conditioning = conditioning if conditioning is not None else NO_CONDITIONING
    bb.check_conditioning(conditioning, shape)
    conditioning = conditioning.batched(batch)
    model_conditioning = conditioning.for_cfg() if use_cfg else conditioning
    scheduler = prepared(scheduler if scheduler is not None else bb.scheduler, steps,
                         lambda s: bb.set_timesteps(s, steps, shape))
    text, mask = plan.text.to(bb.device, bb.dtype), plan.text_mask.to(bb.device)

    def denoise() -> torch.Tensor:  # a function of its own, so an out-of-memory error frees all it allocated
        # Flow matching starts from pure noise (sigma 1); DPM-style schedulers may scale it.
        latents = initial_noise(shape, seed).to(bb.device)
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
        for i, t in enumerate(scheduler.timesteps):
            if cancel is not None and cancel():
                raise SamplingCancelled(f"sampling cancelled at step {i} of {steps}")
            x = bb.condition(latents, conditioning)
            x = torch.cat([x, x]) if use_cfg else x
            x = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
            v = bb.predict(x, t.expand(x.shape[0]), text, mask, model_conditioning).float()
            if use_cfg:
                v_neg, v_pos = v.chunk(2)
                v = v_neg + cfg * (v_pos - v_neg)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if callback is not None:
                callback(i + 1, steps, bb.condition(latents, conditioning))
        return bb.condition(latents, conditioning)

    with torch.no_grad(), model.applied(plan, grid, conditioning.clean_frames):
        return guarded(denoise, f"{run_size(bb, width, height, batch, frames)} while sampling")


def latents_to_images(backbone: BackboneAdapter, latents: torch.Tensor) -> torch.Tensor:
    """Decode to ComfyUI's IMAGE layout: (B, H, W, 3) float in [0, 1]; a clip's frames follow one another in the
    batch ((B * F, H, W, 3), sample by sample)."""
    scale = backbone.pixels_per_token // backbone.patch_size
    batch, height, width = latents.shape[0], latents.shape[-2] * scale, latents.shape[-1] * scale
    frames = backbone.output_frames(latents.shape[2]) if latents.ndim == 5 else 1
    check_fits(backbone, width=width, height=height, batch=batch, frames=frames, stage="decoding")

    def decode() -> torch.Tensor:
        with torch.no_grad():
            pixels = backbone.decode(latents.to(backbone.device)).float()  # (B, 3, [F,] H, W)
        images = ((pixels.clamp(-1, 1) + 1) / 2).movedim(1, -1)
        return images.reshape(-1, *images.shape[-3:]).cpu()

    return guarded(decode, f"{run_size(backbone, width, height, batch, frames)} while decoding")

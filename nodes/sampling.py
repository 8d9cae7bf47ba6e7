"""Sampling: inject the MetaCanvas weights into a backbone (like a LoRA into a MODEL) and sample images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from metacanvas_core.limits import BATCH, CFG, HEIGHT, SEED, SHIFT, STEPS, STRENGTH, WIDTH, checked
from metacanvas_core.memory import estimate
from metacanvas_core.schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, SAMPLERS, make_scheduler

from .comfy import (
    interrupt_check, load_for_use, node_error, notices_shown, preview_resolution, progress_bar, reported_as,
)

INJECT = "Inject into Backbone"
SAMPLE_IMAGE = "Sample Image"

VAE_PREVIEW_PIXELS = 256 * 256  # decode previews with the real VAE up to this size; above, a cheap approximation


class MetaCanvasInject:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backbone": ("METACANVAS_BACKBONE", {"tooltip": "The backbone from Load MetaCanvas Backbone."}),
                "connector": ("METACANVAS_CONNECTOR", {
                    "tooltip": "The MetaCanvas weights from Load MetaCanvas Weights: the same ones Plan Canvas uses.",
                }),
                "strength": ("FLOAT", STRENGTH.widget(
                    step=0.05,
                    tooltip="How strongly the canvas steers the backbone: 0 turns the canvas off (text "
                            "conditioning only), 1 is what the weights were trained with.",
                )),
            }
        }

    RETURN_TYPES = ("METACANVAS_BACKBONE",)
    RETURN_NAMES = ("backbone",)
    OUTPUT_TOOLTIPS = ("The backbone with the MetaCanvas weights applied while sampling (the loaded backbone itself "
                       "is left untouched and can feed other branches).",)
    FUNCTION = "inject"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Applies MetaCanvas weights to a backbone: the canvas connector is hooked onto the patch "
                   "embedding and any DiT weights trained with it are swapped in, only while Sample Image runs. "
                   "Injecting again replaces the previous weights.")

    def inject(self, backbone, connector, strength: float = 1.0):
        with reported_as(INJECT):
            return (backbone.inject(connector, strength),)


class MetaCanvasSampleImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backbone": ("METACANVAS_BACKBONE", {
                    "tooltip": "The backbone, injected with the same MetaCanvas weights that made the plan.",
                }),
                "positive": ("METACANVAS_PLAN", {"tooltip": "The plan of what to draw, from Plan Canvas."}),
                "seed": ("INT", SEED.widget(
                    control_after_generate=True,
                    tooltip="The noise seed. The noise is drawn on the CPU, so a seed gives the same noise on "
                            "any device; the same seed, inputs and models give the same image byte for byte, "
                            "run after run, on the same device and dtype (other devices and dtypes round "
                            "differently).",
                )),
                "steps": ("INT", STEPS.widget(tooltip="Denoising steps.")),
                "cfg": ("FLOAT", CFG.widget(
                    step=0.1, round=0.01,
                    tooltip="Classifier-free guidance scale: how far to push from the negative (or empty) plan "
                            "towards the positive one. 1 turns guidance off.",
                )),
                "width": ("INT", WIDTH.widget(
                    step=4,
                    tooltip="Image width in pixels: a multiple of the backbone's pixels per token (4 for the "
                            "built-in tiny SANA, 32 for SANA 1.5/1.6).",
                )),
                "height": ("INT", HEIGHT.widget(
                    step=4,
                    tooltip="Image height in pixels: a multiple of the backbone's pixels per token (4 for the "
                            "built-in tiny SANA, 32 for SANA 1.5/1.6).",
                )),
                "batch_size": ("INT", BATCH.widget(
                    tooltip="Images per run; one seed draws the noise of the whole batch.",
                )),
                "sampler": (list(SAMPLERS), {
                    "default": DEFAULT_SAMPLER,
                    "tooltip": "How to integrate: the backbone folder's own scheduler (flow DPM-Solver++ 2M, shift 3 "
                               "for released SANA and the built-in tiny SANA), or flow-matching euler or dpmpp_2m "
                               "at the shift below, whatever scheduler the folder ships.",
                }),
                "shift": ("FLOAT", SHIFT.widget(
                    step=0.1, round=0.01,
                    tooltip="Flow shift of euler / dpmpp_2m (ignored by 'backbone default'): above 1 spends more "
                            "steps at high noise, where layout forms. Released SANA uses 3.",
                )),
            },
            "optional": {
                "negative": ("METACANVAS_PLAN", {
                    "tooltip": "Optional plan to guide away from. Without it, guidance uses the empty-prompt plan "
                               "that Plan Canvas attaches to the positive plan.",
                }),
                "source_image": ("IMAGE", {
                    "tooltip": "Image editing (FLUX.1-Kontext backbones): the image to edit, encoded with the "
                               "backbone's VAE as Kontext's reference. Another size is scaled to cover width x "
                               "height and centre-cropped. Connect the same image to Plan Canvas's image so the "
                               "planner sees what it edits. One image, or one per sample. RGB only.",
                }),
            },
        }

    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("image", "latent")
    OUTPUT_TOOLTIPS = ("The decoded images (batch, height, width, RGB in 0..1).",
                       "The backbone's latents as {'samples': tensor} (in the backbone's own VAE space).")
    FUNCTION = "sample"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Samples images from seeded noise with the backbone's own scheduler or the chosen sampler, "
                   "guided by the plan (CFG against the negative or the empty-prompt plan), and decodes them with "
                   "the backbone's VAE. Shows progress with live previews and stops within one step when cancelled. "
                   "With a source_image on a FLUX.1-Kontext backbone it edits that image.")

    def sample(self, backbone, positive, seed: int, steps: int, cfg: float, width: int, height: int,
               batch_size: int = 1, sampler: str = DEFAULT_SAMPLER, shift: float = DEFAULT_SHIFT, negative=None,
               source_image=None):
        from metacanvas_core.sampling import InjectedBackbone, latents_to_images, sample
        from metacanvas_core.tasks import node_task

        bb, connector = backbone.backbone, backbone.connector
        with reported_as(SAMPLE_IMAGE), notices_shown(SAMPLE_IMAGE):
            checked(seed=seed, steps=steps, cfg=cfg, width=width, height=height, batch_size=batch_size, shift=shift)
            bb.check_size(width, height)
            scheduler = make_scheduler(bb.scheduler, sampler, shift)
            task, given, where = node_task(SAMPLE_IMAGE, {"source_image": source_image})
            task.check(bb, connector, where)  # before anything loads
            # Inside ComfyUI: let it unload other models until the run fits (our own check follows in sample()).
            load_for_use(bb, memory_required=estimate(bb, width=width, height=height, batch=batch_size).of("sampling"))
            conditioning = task.inputs(bb, given, width=width, height=height, frames=1, samples=batch_size,
                                       weights=connector, where=where).conditioning
            placed = None if connector is None else connector.on(bb.device, bb.dtype)
            model = InjectedBackbone(bb, placed, backbone.strength)
            bar = progress_bar(steps)
            latents = sample(
                model, positive, negative, width=width, height=height, steps=steps, cfg=cfg, seed=seed,
                batch=batch_size, callback=None if bar is None else _live_preview(bb, bar), cancel=interrupt_check(),
                scheduler=scheduler, conditioning=conditioning,
            )
            if not torch.isfinite(latents).all():
                raise node_error(
                    SAMPLE_IMAGE,
                    "sampling produced NaN or infinite values: load the backbone with dtype fp32, or lower cfg",
                )
            images = latents_to_images(bb, latents)
        return (images, {"samples": latents.cpu()})


def _live_preview(bb, bar):
    size = preview_resolution()

    def callback(step: int, total: int, latents: torch.Tensor) -> None:
        bar.update_absolute(step, total, ("JPEG", preview_image(bb, latents[:1]), size))

    return callback


def preview_image(bb, latents: torch.Tensor) -> Image.Image:
    """A picture of the current latents: the real VAE decode when the image is small (tiny models), otherwise the
    latent channels themselves (first three, normalised) as a cheap stand-in."""
    from metacanvas_core.sampling import latents_to_images

    scale = bb.pixels_per_token // bb.patch_size
    if latents.shape[-2] * latents.shape[-1] * scale * scale <= VAE_PREVIEW_PIXELS:
        rgb = latents_to_images(bb, latents)[0]
    else:
        x = latents[0, :3].float().reshape(-1, *latents.shape[-2:])  # a one-frame clip (C, 1, h, w) too
        lo = x.amin(dim=(1, 2), keepdim=True)
        hi = x.amax(dim=(1, 2), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-6)
        x = F.pad(x, (0, 0, 0, 0, 0, 3 - x.shape[0]))
        x = F.interpolate(x[None], scale_factor=max(1, 256 // max(x.shape[-2:])), mode="nearest")[0]
        rgb = x.permute(1, 2, 0).cpu()
    rgb = torch.nan_to_num(rgb.float(), 0.0).clamp(0, 1)
    img = Image.fromarray((rgb.numpy() * 255).round().astype(np.uint8))
    if max(img.size) < 256:  # tiny images: enlarge so the preview is visible
        factor = 256 // max(img.size)
        img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    return img


NODE_CLASS_MAPPINGS = {
    "MetaCanvasInject": MetaCanvasInject,
    "MetaCanvasSampleImage": MetaCanvasSampleImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MetaCanvasInject": INJECT,
    "MetaCanvasSampleImage": SAMPLE_IMAGE,
}

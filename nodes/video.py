"""Sample Video: text-to-video, image-to-video from a start image, video editing from a source clip or in-context video
from reference images, on a video backbone (Wan 2.2; widened for the last two) with the plan."""

from __future__ import annotations

import torch

from .comfy import (
    interrupt_check, load_for_use, node_error, notices_shown, preview_resolution, progress_bar, reported_as,
)
from metacanvas_core.limits import CFG, FRAMES, HEIGHT, SEED, STEPS, WIDTH, checked
from metacanvas_core.world.clips import SIZE as CLIP_SIZE

from .sampling import preview_image

SAMPLE_VIDEO = "Sample Video"


class MetaCanvasSampleVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backbone": ("METACANVAS_BACKBONE", {
                    "tooltip": "A video backbone (a Wan 2.2 TI2V folder), injected with the same MetaCanvas weights "
                               "that made the plan.",
                }),
                "positive": ("METACANVAS_PLAN", {"tooltip": "The plan of what happens in the clip, from Plan Canvas."}),
                "seed": ("INT", SEED.widget(
                    control_after_generate=True,
                    tooltip="The noise seed. The noise is drawn on the CPU, so a seed gives the same noise on "
                            "any device; the same seed, inputs and models give the same clip byte for byte, "
                            "run after run, on the same device and dtype (other devices and dtypes round "
                            "differently). Compare runs with Save Image (lossless PNG frames): Save "
                            "Video's H.264 is lossy, and ComfyUI's encoder can turn the same frames into "
                            "slightly different files from run to run.",
                )),
                "steps": ("INT", STEPS.widget(tooltip="Denoising steps.")),
                "cfg": ("FLOAT", CFG.widget(
                    step=0.1, round=0.01,
                    tooltip="Classifier-free guidance scale: 3, as the built-in video weights were evaluated and "
                            "every shipped workflow uses (released Wan 2.2 uses 5). 1 turns guidance off.",
                )),
                "width": ("INT", WIDTH.widget(
                    default=CLIP_SIZE, step=4,
                    tooltip="Frame width in pixels: a multiple of the backbone's pixels per token (4 for the tiny "
                            "Wan, whose clips are 32x32; 32 for Wan 2.2 TI2V-5B).",
                )),
                "height": ("INT", HEIGHT.widget(
                    default=CLIP_SIZE, step=4,
                    tooltip="Frame height in pixels: a multiple of the backbone's pixels per token (4 for the tiny "
                            "Wan, whose clips are 32x32; 32 for Wan 2.2 TI2V-5B).",
                )),
                "frames": ("INT", FRAMES.widget(
                    step=4,
                    tooltip="Frames in the clip: 4k+1 (1, 5, 9, 13, 17, ...; Wan 2.2 makes 121 at 24 fps).",
                )),
            },
            "optional": {
                "negative": ("METACANVAS_PLAN", {
                    "tooltip": "Optional plan to guide away from. Without it, guidance uses the empty-prompt plan "
                               "that Plan Canvas attaches to the positive plan.",
                }),
                "start_image": ("IMAGE", {
                    "tooltip": "Optional first frame (image-to-video): kept exactly, as Wan 2.2 TI2V does. Another "
                               "size is scaled and centre-cropped to width x height, as ComfyUI's WanImageToVideo "
                               "does.",
                }),
                "source_video": ("IMAGE", {
                    "tooltip": "Optional clip to edit (video editing), the IMAGE batch of its frames: its latents "
                               "condition the DiT of a Wan folder widened for video editing / in-context video. "
                               "width, height and frames must be the clip's. Give the same clip to Plan Canvas's "
                               "video input.",
                }),
                "reference_images": ("IMAGE", {
                    "tooltip": "Optional reference images (in-context video): each image of the batch is one "
                               "reference (all one size; at most as many as the weights were trained with), put in "
                               "the widened DiT's conditioning frames. Give the same images to Plan Canvas's image "
                               "input.",
                }),
            },
        }

    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("frames", "latent")
    OUTPUT_TOOLTIPS = ("The decoded frames as one IMAGE batch (frames, height, width, RGB in 0..1): feed it to "
                       "CreateVideo.",
                       "The backbone's latents as {'samples': tensor (batch, channels, latent frames, h, w)}.")
    FUNCTION = "sample"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Samples a clip from seeded noise with the backbone's own scheduler, guided by the plan (its "
                   "keyframe canvas is interpolated to every latent frame and added frame by frame), and decodes "
                   "it with the backbone's VAE. With a start image the first frame is that image and stays clean; "
                   "the canvas never touches it. Shows progress with a preview of the middle frame and stops "
                   "within one step when cancelled.")

    def sample(self, backbone, positive, seed: int, steps: int, cfg: float, width: int, height: int, frames: int,
               negative=None, start_image=None, source_video=None, reference_images=None):
        from metacanvas_core.sampling import InjectedBackbone, latents_to_images, sample
        from metacanvas_core.tasks import node_task

        bb, connector = backbone.backbone, backbone.connector
        with reported_as(SAMPLE_VIDEO), notices_shown(SAMPLE_VIDEO):
            checked(seed=seed, steps=steps, cfg=cfg, width=width, height=height, frames=frames)
            bb.token_grid(width, height, frames)  # size and frame count first: nothing loads for a bad request
            task, given, where = node_task(SAMPLE_VIDEO, {"start_image": start_image, "source_video": source_video,
                                                          "reference_images": reference_images})
            task.check(bb, connector, where)  # before anything loads
            load_for_use(bb)
            conditioning = task.inputs(bb, given, width=width, height=height, frames=frames, weights=connector,
                                       where=where).conditioning
            placed = None if connector is None else connector.on(bb.device, bb.dtype)
            model = InjectedBackbone(bb, placed, backbone.strength)
            bar = progress_bar(steps)
            latents = sample(
                model, positive, negative, width=width, height=height, frames=frames, conditioning=conditioning,
                steps=steps, cfg=cfg, seed=seed, callback=None if bar is None else _clip_preview(bb, bar),
                cancel=interrupt_check(),
            )
            if not torch.isfinite(latents).all():
                raise node_error(
                    SAMPLE_VIDEO,
                    "sampling produced NaN or infinite values: load the backbone with dtype fp32, or lower cfg",
                )
            images = latents_to_images(bb, latents)
        return (images, {"samples": latents.cpu()})


def _clip_preview(bb, bar):
    size = preview_resolution()

    def callback(step: int, total: int, latents: torch.Tensor) -> None:
        middle = latents.shape[2] // 2  # the first frame may be the given start image: show the middle one
        bar.update_absolute(step, total, ("JPEG", preview_image(bb, latents[:1, :, middle : middle + 1]), size))

    return callback


NODE_CLASS_MAPPINGS = {"MetaCanvasSampleVideo": MetaCanvasSampleVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"MetaCanvasSampleVideo": SAMPLE_VIDEO}

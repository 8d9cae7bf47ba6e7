"""Planning: the MLLM reads the prompt and fills the canvas (the plan), and a picture of that plan.

Nothing here depends on the seed, so ComfyUI's execution cache keeps the plan while only the seed changes.
"""

from __future__ import annotations

import torch

from metacanvas_core.errors import MetaCanvasError

from .comfy import load_for_use, node_error, reported_as

PLAN_CANVAS = "Plan Canvas"
PREVIEW_CANVAS = "Preview Canvas"

EXAMPLE_PROMPT = "a red circle at top left and a blue square at bottom right"
VIDEO_FPS = 8.0  # the built-in clips' frame rate (world/clips.py FPS)


def _clean(prompt: str) -> str:
    return " ".join(str(prompt).split())


class MetaCanvasPlan:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "planner": ("METACANVAS_PLANNER", {"tooltip": "The MLLM from Load MLLM Planner."}),
                "connector": ("METACANVAS_CONNECTOR", {
                    "tooltip": "The MetaCanvas weights from Load MetaCanvas Weights; inject the same ones into the "
                               "backbone.",
                }),
                "prompt": ("STRING", {
                    "multiline": True,
                    "default": EXAMPLE_PROMPT,
                    "tooltip": "What to draw. The built-in tiny planner only knows the shapes world: colours, "
                               "shapes, counts and 3x3 grid positions, e.g. 'a red circle at top left and a "
                               "blue square at bottom right'.",
                }),
                "canvas_only": ("BOOLEAN", {
                    "default": False,
                    "label_on": "canvas only",
                    "label_off": "canvas + text",
                    "tooltip": "Give the backbone no text at all: only the canvas carries the prompt's plan (the "
                               "paper's 'canvas alone still controls layout' check). Needs 'metacanvas' weights.",
                }),
            },
            "optional": {
                "image": ("IMAGE", {
                    "tooltip": "Images the planner looks at before reading the prompt (the source image of an edit, "
                               "the first frame of image-to-video, the reference images of in-context video), "
                               "through Qwen2.5-VL's own vision tower: every image of the batch, in order. Any size; "
                               "it is resized to the vision tower's multiple as Qwen does. RGB only: drop an alpha "
                               "channel first.",
                }),
                "video": ("IMAGE", {
                    "tooltip": "A clip the planner watches before reading the prompt (video editing: the source "
                               "clip), the IMAGE batch of its frames, through Qwen2.5-VL's video path (frames apart "
                               "in time by video_fps), downscaled to the built-in planner's 32x32 as the video-context "
                               "weights were trained. Connect the same clip to Sample Video's source_video.",
                }),
                "video_fps": ("FLOAT", {
                    "forceInput": True, "default": VIDEO_FPS, "min": 0.1, "max": 240.0,
                    "tooltip": "Frame rate of the video input, e.g. Get Video Components' fps (a socket, not a "
                               "widget: unconnected, the clip is taken as 8 fps like the built-in clips).",
                }),
            },
        }

    RETURN_TYPES = ("METACANVAS_PLAN",)
    RETURN_NAMES = ("plan",)
    OUTPUT_TOOLTIPS = ("The plan: the backbone's text conditioning plus the encoded canvas. Use it as Sample Image's "
                       "positive (or negative) input.",)
    FUNCTION = "plan"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Runs the MLLM planner once over the prompt (and the optional images, which it sees first) and the "
                   "canvas tokens. The text connector turns its "
                   "text states into the backbone's conditioning; the canvas connector turns its canvas states into a "
                   "spatial plan that is added to the backbone's latents while sampling. The empty-prompt plan is "
                   "attached too, so Sample Image needs no negative.")

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        if prompt is not None and not _clean(prompt):
            return f"{PLAN_CANVAS}: prompt is empty: describe the image, e.g. '{EXAMPLE_PROMPT}'"
        return True

    def plan(self, planner, connector, prompt: str, canvas_only: bool = False, image: torch.Tensor | None = None,
             video: torch.Tensor | None = None, video_fps: float | None = None):
        text = _clean(prompt)
        if not text:
            raise node_error(PLAN_CANVAS, f"prompt is empty: describe the image, e.g. '{EXAMPLE_PROMPT}'")
        if image is not None and (image.ndim != 4 or image.shape[0] == 0):
            raise node_error(PLAN_CANVAS, f"image is an empty or malformed batch {tuple(image.shape)}: connect an "
                                          "IMAGE output with at least one image, or leave the input unconnected")
        with reported_as(PLAN_CANVAS):
            if canvas_only:
                connector.require_canvas(
                    "for canvas_only", "pick 'metacanvas' weights in Load MetaCanvas Weights or turn canvas_only off"
                )
            from metacanvas_core.plan import make_plan

            load_for_use(planner)
            loaded = connector.on(planner.device, torch.float32)
            text_prompts = [""] if canvas_only else None
            from metacanvas_core.visual_inputs import rgb_uint8

            visuals = None if image is None else [[rgb_uint8(im, f"image {j + 1} of the batch")
                                                   for j, im in enumerate(image)]]
            if video is not None:
                if image is not None:
                    raise MetaCanvasError("give the planner a video (the clip to edit) or images, not both")
                from metacanvas_core.video_tasks import clip_visual

                visuals = [[clip_visual(video, VIDEO_FPS if video_fps is None else video_fps, "video")]]
            plan = make_plan(planner, loaded, [text], text_prompts=text_prompts, with_unconditional=True,
                             visuals=visuals)
        return (plan,)


class MetaCanvasPreviewCanvas:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "plan": ("METACANVAS_PLAN", {"tooltip": "A plan from Plan Canvas made with 'metacanvas' weights."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("canvas",)
    OUTPUT_TOOLTIPS = ("The encoded canvas as a picture (3 principal components as RGB, one image per sample, its "
                       "keyframes side by side for video weights).",)
    FUNCTION = "preview"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Makes the plan visible: the encoded canvas of each sample, reduced to three principal components "
                   "shown as RGB, keyframes side by side left to right. Regions the planner treats alike get the same "
                   "colour. An untrained canvas is grey.")

    def preview(self, plan):
        from metacanvas_core.preview import canvas_to_rgb

        with reported_as(PREVIEW_CANVAS):
            return (canvas_to_rgb(plan).cpu(),)


NODE_CLASS_MAPPINGS = {
    "MetaCanvasPlan": MetaCanvasPlan,
    "MetaCanvasPreviewCanvas": MetaCanvasPreviewCanvas,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MetaCanvasPlan": PLAN_CANVAS,
    "MetaCanvasPreviewCanvas": PREVIEW_CANVAS,
}

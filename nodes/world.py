"""Shapes World Scene: draws a shapes-world scene from its caption, e.g. the start image of image-to-video, so a
workflow needs no image file placed by hand."""

from __future__ import annotations

import torch

from metacanvas_core.limits import Limit

from .comfy import reported_as

SHAPES_WORLD_SCENE = "Shapes World Scene"
SIZE = Limit("size", int, 24, 1024, 32, " (pixels; the scene is square)")
EXAMPLE_SCENE = "a red circle moves from left to right and a yellow square at top left"


class MetaCanvasShapesWorldScene:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "caption": ("STRING", {
                    "multiline": True,
                    "default": EXAMPLE_SCENE,
                    "tooltip": "The scene: objects such as 'a red circle at top left', joined by 'and'. An object "
                               "that 'moves from left to right' is drawn where it starts, so a video prompt gives "
                               "its own first frame. Colours red, green, blue, yellow; shapes circle, square, "
                               "triangle; cells of a 3x3 grid (top left ... bottom right, center).",
                }),
                "size": ("INT", SIZE.widget(
                    step=8, tooltip="Width and height in pixels (the scene is square). The built-in image and video "
                                    "models make 32x32 images and clips.",
                )),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The scene as one RGB image (1, size, size, 3) in 0..1: e.g. Sample Video's start_image.",)
    FUNCTION = "render"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Draws a shapes-world scene from its caption, exactly as the tiny world's training images are "
                   "drawn (no randomness: the same caption gives the same pixels). Use it as the start image of "
                   "image-to-video, or as an image for Plan Canvas.")

    def render(self, caption: str, size: int):
        from metacanvas_core.world.scene_text import render_caption

        with reported_as(SHAPES_WORLD_SCENE):
            pixels = render_caption(caption, SIZE.check(size))
        return (torch.from_numpy(pixels).float().div(255)[None],)


NODE_CLASS_MAPPINGS = {"MetaCanvasShapesWorldScene": MetaCanvasShapesWorldScene}
NODE_DISPLAY_NAME_MAPPINGS = {"MetaCanvasShapesWorldScene": SHAPES_WORLD_SCENE}

"""Shapes World Scene: a caption drawn as the shapes world draws it, through the node class as ComfyUI runs it."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from editor_graph import PACK_NAME, load_pack

from metacanvas_core.world import clips
from metacanvas_core.world.scorer import detect
from metacanvas_core.world.shapes import Obj, render

load_pack()
world = importlib.import_module(f"{PACK_NAME}.nodes.world")
Scene = world.MetaCanvasShapesWorldScene


def test_a_caption_becomes_its_scene_deterministically():
    (image,) = Scene().render("a red circle at top left and a blue square at bottom right", 64)
    assert image.shape == (1, 64, 64, 3) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    expected = render((Obj("red", "circle", 0), Obj("blue", "square", 8)), 64)
    assert torch.equal(image[0], torch.from_numpy(expected).float() / 255)
    assert torch.equal(Scene().render("a red circle at top left and a blue square at bottom right", 64)[0], image)
    found = {(d.colour, d.shape, d.cell) for d in detect(image[0].numpy())}
    assert found == {("red", "circle", 0), ("blue", "square", 8)}
    (small,) = Scene().render("A green triangle at center", 32)
    assert small.shape == (1, 32, 32, 3) and {(d.colour, d.shape, d.cell) for d in detect(small[0].numpy())} == {
        ("green", "triangle", 4)}


def test_a_motion_caption_gives_its_clips_first_frame():
    scene = clips.benchmark_clips(2)[1]  # a mover and a still object
    (image,) = Scene().render(scene.caption, clips.SIZE)
    assert np.array_equal((image[0].numpy() * 255).round().astype(np.uint8), clips.start_image(scene))


@pytest.mark.parametrize("caption, fragments", [
    ("", ["caption is empty"]),
    ("a purple circle at top", ["unknown colour 'purple'", "red, green, blue, yellow"]),
    ("a red star at top", ["unknown shape 'star'", "circle, square, triangle"]),
    ("a red circle", ["cannot read 'a red circle'", "at top left"]),
    ("a red circle at top and a blue square moves from top to bottom", ["two objects start at top"]),
])
def test_bad_captions_are_node_errors(caption, fragments):
    with pytest.raises(ValueError) as err:
        Scene().render(caption, 64)
    assert str(err.value).startswith("Shapes World Scene: ")
    for f in fragments:
        assert f in str(err.value)

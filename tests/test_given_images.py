"""Issue 27, point 2: one check of the images a task is given (edit sources, start images, reference images, source
clips): an all-zero image, the mark of an empty or failed image upstream, is refused by every task alike, by the
input's name; a black frame inside a clip (a fade) is not."""

from __future__ import annotations

import pytest
import torch

from metacanvas_core.backbones import load_backbone
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.tasks import task

ZERO = torch.zeros(1, 32, 32, 3)


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(seed))


def test_every_given_image_refuses_all_zeros(wan_pair, random_kontext_dir):
    t2v, wide = wan_pair
    kontext = load_backbone(random_kontext_dir)
    cases = [
        ("edit", kontext, ZERO, "source_image is all zeros", {}),
        ("i2v", t2v, ZERO, "start_image is all zeros", {"frames": 9}),
        ("in-context", wide, [_image(), ZERO], "reference_images 2 is all zeros", {"frames": 9}),
        ("video-edit", wide, torch.zeros(9, 32, 32, 3), "source_video is all zeros", {}),
    ]
    for name, backbone, given, message, size in cases:
        definition = task(name)
        with pytest.raises(MetaCanvasError, match=rf"^{message} \(an empty or failed image upstream"):
            definition.inputs(backbone, given, where=definition.given.node_input, **size)


def test_a_black_frame_inside_a_clip_is_taken(wan_pair):
    _, wide = wan_pair
    clip = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    clip[0] = 0  # a fade from black
    built = task("video-edit").inputs(wide, clip)
    assert (built.width, built.height, built.frames) == (32, 32, 9)

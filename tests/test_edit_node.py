"""Sample Image's source_image (image editing on FLUX.1-Kontext) through the node classes, on untrained tiny
files: the edit runs with the planner seeing the source, and every bad request is a node error naming the fix."""

from __future__ import annotations

import re

import pytest
import torch

from editor_graph import load_pack
from metacanvas_core.backbones import load_backbone
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.planner import Planner
from metacanvas_core.sampling import InjectedBackbone
from metacanvas_core.world.edits import edit_benchmark, render_pair

NODES = load_pack().NODE_CLASS_MAPPINGS
FAST = dict(seed=0, steps=2, cfg=2.0, width=32, height=32)


def _node(name: str, **inputs):
    cls = NODES[name]
    return getattr(cls(), cls.FUNCTION)(**inputs)


def expect_error(*fragments: str):
    pattern = "^Sample Image: " + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(ValueError, match=re.compile(pattern, re.S))


@pytest.fixture(scope="module")
def parts(random_planner_dir, random_kontext_dir, random_edit_weights, random_sana_dir):
    planner = Planner.from_pretrained(random_planner_dir)
    loaded = load_connector(random_edit_weights["metacanvas"])
    kontext = InjectedBackbone(load_backbone(random_kontext_dir)).inject(loaded)
    src, _ = render_pair(edit_benchmark(5)[0], 32)
    source = torch.from_numpy(src).float().div(255)[None]
    (plan,) = _node("MetaCanvasPlan", planner=planner, connector=loaded, prompt="make the red circle green",
                    image=source)
    return dict(planner=planner, loaded=loaded, kontext=kontext, source=source, plan=plan,
                sana=InjectedBackbone(load_backbone(random_sana_dir)))


def test_sample_image_edits_the_source(parts):
    image, latent = _node("MetaCanvasSampleImage", backbone=parts["kontext"], positive=parts["plan"],
                          source_image=parts["source"], **FAST)
    assert image.shape == (1, 32, 32, 3) and torch.isfinite(image).all()
    other = parts["source"].flip(2)
    image2, _ = _node("MetaCanvasSampleImage", backbone=parts["kontext"], positive=parts["plan"],
                      source_image=other, **FAST)
    assert not torch.equal(image, image2)  # the reference enters the DiT
    # A larger source is fitted to the output size (as ComfyUI's Kontext nodes scale it), not refused.
    big = torch.nn.functional.interpolate(parts["source"].movedim(-1, 1), size=(64, 96)).movedim(1, -1)
    image3, _ = _node("MetaCanvasSampleImage", backbone=parts["kontext"], positive=parts["plan"],
                      source_image=big, **FAST)
    assert image3.shape == (1, 32, 32, 3)


def test_bad_edit_requests_are_node_errors(parts):
    kw = dict(backbone=parts["kontext"], positive=parts["plan"], **FAST)
    with expect_error("trained for task 'edit', not 't2i'", "give its source image (Sample Image's source_image"):
        _node("MetaCanvasSampleImage", **kw)
    with expect_error("source_image", "alpha"):
        _node("MetaCanvasSampleImage", source_image=torch.zeros(1, 32, 32, 4), **kw)
    with expect_error("source_image", "NaN"):
        _node("MetaCanvasSampleImage", source_image=torch.full((1, 32, 32, 3), float("nan")), **kw)
    with expect_error("source_image", "empty"):
        _node("MetaCanvasSampleImage", source_image=torch.zeros(0, 32, 32, 3), **kw)
    with expect_error("source_image holds 2 images for a batch of 3", "give one", "or 3"):
        _node("MetaCanvasSampleImage", source_image=parts["source"].repeat(2, 1, 1, 1), batch_size=3, **kw)
    sana_plan = _node("MetaCanvasPlan", planner=parts["planner"], connector=parts["loaded"], prompt="a red circle")[0]
    with expect_error("source_image", "takes no source image (image editing)", "FLUX.1-Kontext"):
        _node("MetaCanvasSampleImage", backbone=parts["sana"], positive=sana_plan, source_image=parts["source"],
              **FAST)
    with pytest.raises(ValueError, match="^Inject into Backbone: .*flux"):
        _node("MetaCanvasInject", backbone=parts["sana"], connector=parts["loaded"], strength=1.0)


def test_an_all_zero_source_image_is_refused_as_a_start_image_is(parts, monkeypatch):
    """Issue 27, point 2: an all-zero source image (an empty or failed image upstream) was edited into a blue blob,
    while image-to-video refused an all-zero start image. One check serves both."""
    kw = dict(backbone=parts["kontext"], positive=parts["plan"], **FAST)
    monkeypatch.setattr(type(parts["kontext"].backbone), "predict", lambda *a, **k: pytest.fail("sampled"))
    with expect_error("source_image is all zeros", "an empty or failed image upstream"):
        _node("MetaCanvasSampleImage", source_image=torch.zeros(1, 32, 32, 3), **kw)
    with expect_error("source_image image 2 is all zeros"):
        _node("MetaCanvasSampleImage", source_image=torch.cat([parts["source"], torch.zeros(1, 32, 32, 3)]),
              batch_size=2, **kw)

"""Plan Canvas with an image the planner sees, and Preview Canvas with keyframes, through the node classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editor_graph import call, expect_error
from metacanvas_core.checkpoints import load_connector, save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.world import shapes

PROMPT = "a red circle at top left"


@pytest.fixture(scope="module")
def models():
    planner, = call("MetaCanvasPlannerLoader", planner="built-in tiny: planner", dtype="auto", device="auto")
    mc, = call("MetaCanvasConnectorLoader", weights="built-in tiny: metacanvas_t2i")
    return planner, mc


def _image(cell: int, size: int = 32) -> torch.Tensor:
    """A shapes-world scene as ComfyUI's IMAGE batch of one (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(shapes.render((shapes.Obj("red", "circle", cell),), size))[None] / 255.0


def test_plan_canvas_sees_the_image(models):
    planner, mc = models
    plain, = call("MetaCanvasPlan", planner=planner, connector=mc, prompt=PROMPT, canvas_only=False)
    left, = call("MetaCanvasPlan", planner=planner, connector=mc, prompt=PROMPT, canvas_only=False, image=_image(0))
    right, = call("MetaCanvasPlan", planner=planner, connector=mc, prompt=PROMPT, canvas_only=False, image=_image(8))
    assert left.text.shape[1] == plain.text.shape[1] + 18  # <|vision_start|> 16 image tokens <|vision_end|>
    assert not torch.allclose(left.canvas, right.canvas) and not torch.allclose(left.canvas, plain.canvas)
    # A batch of two images: both seen, in order (two visuals before the prompt).
    both, = call("MetaCanvasPlan", planner=planner, connector=mc, prompt=PROMPT, canvas_only=False,
                 image=torch.cat([_image(0), _image(8)]))
    assert both.text.shape[1] == plain.text.shape[1] + 36
    # Canvas only: the DiT gets no text (nor the image); the canvas still saw it.
    only, = call("MetaCanvasPlan", planner=planner, connector=mc, prompt=PROMPT, canvas_only=True, image=_image(0))
    assert torch.equal(only.canvas, left.canvas) and only.text.shape[1] == 1


def test_plan_canvas_image_errors_name_the_node_and_the_fix(models):
    planner, mc = models
    args = dict(planner=planner, connector=mc, prompt=PROMPT, canvas_only=False)
    with expect_error("Plan Canvas", "empty", "at least one image"):
        call("MetaCanvasPlan", **args, image=torch.zeros(0, 32, 32, 3))
    with expect_error("Plan Canvas", "image 1 of the batch", "alpha channel", "Split Image with Alpha"):
        call("MetaCanvasPlan", **args, image=torch.ones(1, 32, 32, 4))
    with expect_error("Plan Canvas", "image 2 of the batch", "NaN"):
        call("MetaCanvasPlan", **args, image=torch.cat([_image(0), torch.full((1, 32, 32, 3), float("nan"))]))
    # Another size is taken and resized as Qwen does, within the tiny planner's 32x32 pixel count (48x40 -> 32x24
    # -> 4x3 merged tokens).
    odd, = call("MetaCanvasPlan", **args, image=_image(0, 48)[:, :, :40])
    plain, = call("MetaCanvasPlan", **args)
    assert odd.text.shape[1] == plain.text.shape[1] + 2 + 12


def test_preview_canvas_shows_keyframes_side_by_side(models, tmp_path):
    planner, mc = models
    plan, = call("MetaCanvasPlan", planner=planner, connector=mc, prompt=PROMPT, canvas_only=False)
    flat, = call("MetaCanvasPreviewCanvas", plan=plan)
    assert flat.shape == (1, 256, 256, 3)
    # Video weights with 3 keyframes of 4x6 (an untrained connector with a random output projection).
    torch.manual_seed(0)
    cfg = ConnectorConfig(128, 64, 64, canvas_grid=[3, 4, 6], keyframe_seconds=1.0)
    conn = MetaCanvasConnector(cfg)
    torch.nn.init.normal_(conn.canvas_encoder.proj.weight)
    path = tmp_path / "k3.safetensors"
    save_connector(path, conn, type("Wan", (), {"architecture": "wan", "fingerprint": lambda self: {}})())
    k3, = call("MetaCanvasPlan", planner=planner, connector=load_connector(path), prompt=PROMPT, canvas_only=False,
               image=_image(3))
    assert k3.canvas.shape == (1, 3, 4, 6, 64)
    strip, = call("MetaCanvasPreviewCanvas", plan=k3)
    width, gap = 384, 8  # 256 * 6 / 4 per keyframe, 256 / 32 between
    assert strip.shape == (1, 256, 3 * width + 2 * gap, 3)
    for f in (1, 2):  # white lines between the keyframes
        assert (strip[:, :, f * width + (f - 1) * gap : f * (width + gap)] == 1).all()
    keyframes = [strip[0, :, f * (width + gap) : f * (width + gap) + width] for f in range(3)]
    assert not torch.equal(keyframes[0], keyframes[2])
    # Each keyframe's picture is its own canvas, nearest-upscaled: constant over each 64x64 token block.
    assert np.unique(keyframes[1][:64, :64].reshape(-1, 3).numpy(), axis=0).shape[0] == 1

"""The shipped tiny world end to end: the command line writes a PNG, the planner understands the world."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from metacanvas_core.builtin import PLANNER
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.planner import Planner
from metacanvas_core.training.tasks.planner import IMAGE_TOKENS
from metacanvas_core.world import shapes


@pytest.fixture(scope="module")
def pipe():
    return MetaCanvasPipeline.builtin("metacanvas")


def test_generate_command_writes_the_png_and_canvas_preview(tmp_path):
    out, preview = tmp_path / "x.png", tmp_path / "canvas.png"
    cmd = [sys.executable, "-m", "metacanvas_core", "generate", "--prompt", "a red circle at top left",
           "--out", str(out), "--canvas-preview", str(preview), "--steps", "8", "--upscale", "4"]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert "pip install accelerate" not in run.stderr  # no loader nag when the training extra is not installed
    assert Image.open(out).size == (128, 128)
    assert Image.open(preview).size == (128, 128)


def test_generate_command_reports_bad_input_without_a_traceback():
    cmd = [sys.executable, "-m", "metacanvas_core", "generate", "--prompt", "a red circle", "--out", "/tmp/never.png",
           "--width", "30"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "multiples of 4" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(cmd[:-2] + ["--method", "global", "--empty-text"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "have no canvas" in proc.stderr and "--method metacanvas" in proc.stderr


def test_pipeline_is_deterministic_and_rejects_bad_prompts(pipe):
    a = pipe("a blue square at bottom right", steps=6, seed=3).images
    assert torch.equal(a, pipe("a blue square at bottom right", steps=6, seed=3).images)
    assert a.shape == (1, 32, 32, 3) and 0 <= a.min() and a.max() <= 1
    with pytest.raises(MetaCanvasError, match="prompt is empty"):
        pipe("   ")
    with pytest.raises(MetaCanvasError, match="multiples of 4"):
        pipe("a circle", width=33)


def test_shipped_planner_understands_the_shapes_world():
    """Grounding on held-out position scenes through the model's own vision path and generate()."""
    planner = Planner.from_pretrained(PLANNER)
    tok, proc = planner.tokenizer, AutoImageProcessor.from_pretrained(PLANNER)
    ids = tok.convert_tokens_to_ids
    rng = np.random.default_rng(2024)
    hits, n = 0, 30
    for _ in range(n):
        scene = shapes.sample_scene(rng, "position", split="heldout")
        prefix = [ids("<|vision_start|>")] + [ids("<|image_pad|>")] * IMAGE_TOKENS + [ids("<|vision_end|>")]
        prefix += tok("describe", add_special_tokens=False)["input_ids"]
        vis = proc(images=[shapes.render(scene.objects, 32, rng)], return_tensors="pt")
        x = torch.tensor([prefix])
        out = planner.model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), mm_token_type_ids=(x == ids("<|image_pad|>")).int(),
            pixel_values=vis["pixel_values"], image_grid_thw=vis["image_grid_thw"], max_new_tokens=24, do_sample=False,
        )
        hits += tok.decode(out[0, len(prefix):], skip_special_tokens=True).strip() == shapes.describe(scene.objects)
    assert hits / n >= 0.8, f"planner captions {hits}/{n} held-out scenes exactly"

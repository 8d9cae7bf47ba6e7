"""Video editing and in-context video through the node classes (loaders -> Plan Canvas -> Inject -> Sample Video) on
the built-in names, here untrained stand-ins (conftest `builtin_context`): the planner sees the clip or the
references, the DiT is conditioned on them, bad input is reported by the node's name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editor_graph import call, expect_error
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.world.clip_edits import render_clip_edit, sample_clip_edit

FAST = dict(seed=0, steps=1, cfg=3.0, width=32, height=32, frames=17)


@pytest.fixture
def graph(builtin_context):
    planner, = call("MetaCanvasPlannerLoader", planner="built-in tiny: planner", dtype="auto", device="auto")
    backbone, = call("MetaCanvasBackboneLoader", backbone="built-in tiny: wan_video_context")
    weights, = call("MetaCanvasConnectorLoader", weights="built-in tiny: metacanvas_video_context")
    model, = call("MetaCanvasInject", backbone=backbone, connector=weights, strength=1.0)
    return planner, weights, model


def _source() -> torch.Tensor:
    src, _ = render_clip_edit(sample_clip_edit(np.random.default_rng(0), "recolour"))
    return torch.from_numpy(src).float() / 255  # (17, 32, 32, 3)


def _ref(caption: str) -> torch.Tensor:
    return call("MetaCanvasShapesWorldScene", caption=caption, size=32)[0]


def test_video_edit_plan_sees_the_clip_and_the_sample_keeps_its_size(graph):
    planner, weights, model = graph
    clip = _source()
    args = dict(planner=planner, connector=weights, prompt="make the red circle green", canvas_only=False)
    plain, = call("MetaCanvasPlan", **args)
    seen, = call("MetaCanvasPlan", **args, video=clip, video_fps=8.0)
    assert not torch.equal(plain.canvas_states, seen.canvas_states)  # the planner watched the clip
    frames, latent = call("MetaCanvasSampleVideo", backbone=model, positive=seen, source_video=clip, **FAST)
    assert frames.shape == (17, 32, 32, 3) and torch.isfinite(frames).all()
    other, _ = call("MetaCanvasSampleVideo", backbone=model, positive=seen, source_video=clip.flip(2), **FAST)
    assert not torch.equal(frames, other)  # the source clip conditions the DiT (its weights are random here)


def test_in_context_plan_and_sample_take_the_reference_batch(graph):
    planner, weights, model = graph
    refs = torch.cat([_ref("a red circle at center"), _ref("a blue square at center")])
    plan, = call("MetaCanvasPlan", planner=planner, connector=weights, canvas_only=False, image=refs,
                 prompt="the red circle moves from left to right and the blue square is at top left")
    frames, _ = call("MetaCanvasSampleVideo", backbone=model, positive=plan, reference_images=refs, **FAST)
    assert frames.shape == (17, 32, 32, 3)
    one, _ = call("MetaCanvasSampleVideo", backbone=model, positive=plan, reference_images=refs[:1], **FAST)
    assert not torch.equal(frames, one)


def test_bad_context_inputs_name_the_node_and_the_fix(graph):
    planner, weights, model = graph
    clip = _source()
    plan, = call("MetaCanvasPlan", planner=planner, connector=weights, prompt="make the red circle green",
                 canvas_only=False)
    with expect_error("Sample Video", "differ from the source_video's 32x32x17", "video editing keeps its size"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, source_video=clip, **{**FAST, "frames": 9})
    with expect_error("Sample Video", "frames 16", "use 13 or 17"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, source_video=clip[:16], **{**FAST, "frames": 16})
    with expect_error("Sample Video", "give one of start_image (image-to-video), source_video (video editing) or "
                                      "reference_images (in-context video), not several"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, source_video=clip, reference_images=clip[:1],
             **FAST)
    with expect_error("Sample Video", "reference_images", "trained with at most 2", "give at most 2"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, reference_images=clip[:3], **FAST)
    with expect_error("Sample Video", "reference_images", "NaN"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, reference_images=clip[:1] * float("nan"),
             **FAST)
    with expect_error("Sample Video", "trained for task 'video-context' (serving video-edit, in-context), not 't2v'",
                      "video editing: give its source clip (Sample Video's source_video"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, **FAST)
    args = dict(planner=planner, connector=weights, prompt="make the red circle green", canvas_only=False)
    with expect_error("Plan Canvas", "video", "or images, not both"):
        call("MetaCanvasPlan", **args, video=clip, image=clip[:1])
    with expect_error("Plan Canvas", "video", "frame rate 0.0"):
        call("MetaCanvasPlan", **args, video=clip, video_fps=0.0)
    with expect_error("Plan Canvas", "video is empty"):
        call("MetaCanvasPlan", **args, video=clip[:0])


def test_weights_for_another_task_and_a_t2v_backbone_are_refused(builtin_context):
    clip = _source()
    t2v, = call("MetaCanvasBackboneLoader", backbone="built-in tiny: wan_t2v")
    t2v_weights, = call("MetaCanvasConnectorLoader", weights="built-in tiny: metacanvas_t2v")
    model, = call("MetaCanvasInject", backbone=t2v, connector=t2v_weights, strength=1.0)
    planner, = call("MetaCanvasPlannerLoader", planner="built-in tiny: planner", dtype="auto", device="auto")
    plan, = call("MetaCanvasPlan", planner=planner, connector=t2v_weights, prompt="make the red circle green",
                 canvas_only=False)
    with expect_error("Sample Video", "source_video", "takes no source clip (video editing)", "Wan 2.2 folder made"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, source_video=clip, **FAST)
    wide, = call("MetaCanvasBackboneLoader", backbone="built-in tiny: wan_video_context")
    edit_only = load_connector(builtin_context / "metacanvas_video_context.safetensors")
    edit_only.recipe = {"task": "video-edit"}
    model, = call("MetaCanvasInject", backbone=wide, connector=edit_only, strength=1.0)
    with expect_error("Sample Video", "trained for task 'video-edit', not 'in-context'"):
        call("MetaCanvasSampleVideo", backbone=model, positive=plan, reference_images=clip[:1], **FAST)

"""The one helper that turns a source clip or reference images into what the planner sees and the Wan DiT's
conditioning channels, with bad input named."""

import numpy as np
import pytest
import torch

from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.planner import Planner
from metacanvas_core.plan import CanvasPlan
from metacanvas_core.sampling import InjectedBackbone, sample
from metacanvas_core.video_tasks import in_context_inputs, video_edit_inputs
from metacanvas_core.visual_inputs import Video


def _clip(frames=17, size=32):  # the clip world's size
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(frames))


def test_video_edit_inputs(wan_pair):
    _, wide = wan_pair
    clip = _clip()
    got = video_edit_inputs(wide, clip, fps=8)
    assert (got.width, got.height, got.frames) == (32, 32, 17)
    with torch.no_grad():
        assert torch.equal(got.conditioning.context, wide.encode(clip.movedim(-1, 0)[None] * 2 - 1))
    assert got.conditioning.context.shape == (1, 16, 5, 8, 8)
    assert torch.equal(got.conditioning.context_mask, torch.ones(1, 4, 5, 8, 8))
    ((video,),) = got.visuals  # one clip, seen by every prompt
    assert isinstance(video, Video) and video.fps == 8 and video.frames.shape == (17, 32, 32, 3)
    assert video.frames.dtype == np.uint8
    plan = CanvasPlan(["x"], torch.randn(1, 3, wide.caption_channels), torch.ones(1, 3, dtype=torch.long), None, "n")
    out = sample(InjectedBackbone(wide), plan, width=got.width, height=got.height, frames=got.frames, steps=1,
                 cfg=1.0, conditioning=got.conditioning)
    assert out.shape == (1, 16, 5, 8, 8)


def test_in_context_inputs_put_reference_r_in_latent_frame_r(wan_pair):
    _, wide = wan_pair
    refs = [torch.rand(1, 64, 64, 3), torch.rand(64, 64, 3)]  # references larger than the clip: downscaled
    got = in_context_inputs(wide, refs, 32, 32, 17)
    ctx, mask = got.conditioning.context, got.conditioning.context_mask
    assert ctx.shape == (1, 16, 5, 8, 8) and mask.shape == (1, 4, 5, 8, 8)
    up = torch.nn.functional.interpolate(torch.stack([refs[0][0], refs[1]]).movedim(-1, 1), size=(32, 32),
                                         mode="bilinear", antialias=True) * 2 - 1
    with torch.no_grad():
        want = wide.encode(up)  # (2, 16, 1, 8, 8)
    assert torch.equal(ctx[0, :, :2], want[:, :, 0].movedim(0, 1)) and not ctx[:, :, 2:].any()
    assert mask[:, :, :2].all() and not mask[:, :, 2:].any()
    (seen,) = got.visuals  # both references, seen by every prompt
    assert [v.shape for v in seen] == [(64, 64, 3)] * 2  # as given: the planner's processor scales them


def test_the_shipped_planner_reads_the_visuals_before_the_prompt(wan_pair):
    from metacanvas_core.builtin import PLANNER

    _, wide = wan_pair
    planner = Planner.from_pretrained(PLANNER)
    edit = video_edit_inputs(wide, _clip(5), fps=8)
    ref = in_context_inputs(wide, [torch.rand(1, 64, 64, 3)], 32, 32, 5)  # read at the planner's 32x32: 16 tokens
    plain = planner.encode(["make the red circle green"]).text_states
    seen = planner.encode(["make the red circle green"], visuals=edit.visuals).text_states
    # 5 frames at 32x32: 3 temporal patches (the last frame repeated) x 16 merged tokens, in a vision start/end pair
    assert seen.shape[1] == plain.shape[1] + 3 * 16 + 2
    plain = planner.encode(["the red circle moves"]).text_states
    assert planner.encode(["the red circle moves"], visuals=ref.visuals).text_states.shape[1] == plain.shape[1] + 18


def test_bad_inputs_are_named(wan_pair):
    t2v, wide = wan_pair
    with pytest.raises(MetaCanvasError, match=r"--video: frames 16 .*use 13 or 17"):
        video_edit_inputs(wide, _clip(16), 8, where="--video")
    with pytest.raises(MetaCanvasError, match=r"--video: width 30 and height 30 do not fit.*of 4.*use width 32"):
        video_edit_inputs(wide, _clip(17, 30), 8, where="--video")
    with pytest.raises(MetaCanvasError, match="empty .*give the clip to edit"):
        video_edit_inputs(wide, _clip(17)[:0], 8)
    with pytest.raises(MetaCanvasError, match="NaN"):
        video_edit_inputs(wide, _clip(17) * float("nan"), 8)
    with pytest.raises(MetaCanvasError, match="takes no source clip or reference images"):
        video_edit_inputs(t2v, _clip(17), 8)
    with pytest.raises(MetaCanvasError, match=r"--image have mixed sizes \[\(32, 32\), \(64, 64\)\]"):
        in_context_inputs(wide, [torch.rand(32, 32, 3), torch.rand(64, 64, 3)], 32, 32, 17, where="--image")
    with pytest.raises(MetaCanvasError, match="6 references, but a clip of 17 frames holds one per latent frame: give "
                                              "at most 5"):
        in_context_inputs(wide, [torch.rand(32, 32, 3)] * 6, 32, 32, 17)
    with pytest.raises(MetaCanvasError, match="2 references, but the weights were trained with at most 1"):
        in_context_inputs(wide, [torch.rand(32, 32, 3)] * 2, 32, 32, 17, max_references=1)
    with pytest.raises(MetaCanvasError, match="no reference images"):
        in_context_inputs(wide, [], 32, 32, 17)
    with pytest.raises(MetaCanvasError, match="reference images 2 contains NaN"):
        in_context_inputs(wide, [torch.rand(32, 32, 3), torch.full((32, 32, 3), float("nan"))], 32, 32, 17)

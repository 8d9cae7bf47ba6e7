"""Image editing end to end on an untrained tiny Kontext folder: the source image reaches the planner and the DiT,
is fitted to the output size, and bad sources, missing sources and wrong backbones are refused clearly."""

from __future__ import annotations

import pytest
import torch

from metacanvas_core.editing import source_image_inputs
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.planner import Planner
from metacanvas_core.tasks import task
from metacanvas_core.world.edits import edit_benchmark, render_pair


def _source(edit_index: int = 0, size: int = 32) -> torch.Tensor:
    src, _ = render_pair(edit_benchmark(5)[edit_index], size)
    return torch.from_numpy(src).float().div(255)[None]


@pytest.fixture(scope="module")
def pipe(random_planner_dir, random_kontext_dir, random_edit_weights):
    return MetaCanvasPipeline.from_pretrained(random_planner_dir, random_kontext_dir, random_edit_weights["metacanvas"])


def test_an_edit_sees_the_source_in_the_planner_and_the_dit(pipe, monkeypatch):
    seen = []
    original = Planner.encode
    monkeypatch.setattr(Planner, "encode", lambda self, prompts, *a, visuals=None, **k:
                        seen.append(visuals) or original(self, prompts, *a, visuals=visuals, **k))
    kw = dict(width=32, height=32, steps=2, cfg=2.0, seed=1)
    a = pipe("make the red circle green", task="edit", given=_source(0), **kw)
    assert a.images.shape == (1, 32, 32, 3) and torch.isfinite(a.images).all()
    assert seen[0] is not None and seen[0][0][0].shape == (32, 32, 3)  # the positive plan saw the source
    b = pipe("make the red circle green", task="edit", given=_source(1), **kw)
    assert not torch.equal(a.latents, b.latents)  # the source changes the result
    again = pipe("make the red circle green", task="edit", given=_source(0), **kw)
    assert torch.equal(a.latents, again.latents)


def test_a_batch_of_sources_edits_each_its_own(pipe):
    sources = torch.cat([_source(0), _source(1)])
    kw = dict(width=32, height=32, steps=2, cfg=1.0, seed=[3, 4])
    both = pipe(["remove the red circle", "remove the red circle"], task="edit", given=sources, **kw)
    one = pipe(["remove the red circle"], task="edit", given=sources[1:], width=32, height=32, steps=2, cfg=1.0, seed=[4])
    assert torch.allclose(both.latents[1:], one.latents, atol=1e-4)
    with pytest.raises(MetaCanvasError, match="holds 3 images for a batch of 2"):
        pipe(["a", "b"], task="edit", given=torch.cat([sources, sources[:1]]), **kw)


def test_a_source_of_another_size_is_scaled_to_cover_and_centre_cropped(pipe):
    bb = pipe.model.backbone
    wide = torch.zeros(1, 32, 64, 3)
    wide[:, :, 16:48] = _source(0)  # the middle square of a wide image
    assert torch.allclose(source_image_inputs(bb, wide, 32, 32).conditioning.reference,
                          source_image_inputs(bb, _source(0), 32, 32).conditioning.reference, atol=1e-5)
    big = _source(0, 64)
    inputs = source_image_inputs(bb, big, 32, 32)
    assert inputs.conditioning.reference.shape == (1, 16, 16, 16)
    assert inputs.visuals[0][0].shape == (64, 64, 3)  # the planner sees the source at its own size


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(0, 32, 32, 3), "empty"),
    (torch.zeros(1, 0, 32, 3), "empty"),
    (torch.full((1, 32, 32, 3), float("nan")), "NaN"),
    (torch.zeros(1, 32, 32, 4), "alpha"),
    (torch.zeros(32, 32, 3), "image batch"),
])
def test_bad_sources_are_refused_clearly(pipe, bad, match):
    with pytest.raises(MetaCanvasError, match=f"source image.*{match}"):
        pipe("make the red circle green", task="edit", given=bad, width=32, height=32, steps=1)


def test_edit_weights_need_a_source_and_other_backbones_cannot_take_one(pipe, random_planner_dir, random_sana_dir,
                                                                        tmp_path):
    with pytest.raises(MetaCanvasError, match="image editing needs a source image"):
        pipe("make the red circle green", width=32, height=32, steps=1)  # the task the weights were trained for
    with pytest.raises(MetaCanvasError, match="trained for task 'edit', not 't2i'.*source_image.*--task edit --image"):
        pipe("make the red circle green", task="t2i", width=32, height=32, steps=1)
    from metacanvas_core.backbones import load_backbone

    sana = load_backbone(random_sana_dir)
    with pytest.raises(MetaCanvasError, match="takes no source image.*FLUX.1-Kontext"):
        task("edit").inputs(sana, _source(0), width=32, height=32)

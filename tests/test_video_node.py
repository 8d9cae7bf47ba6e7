"""Sample Video through its node class, on a tiny untrained Wan 2.2 folder: clips out, start image kept, bad input
reported by the node's name."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import torch

from editor_graph import PACK_NAME, load_pack
from metacanvas_core.backbones import load_backbone
from metacanvas_core.checkpoints import MetaCanvasWeights
from metacanvas_core.pixels import cover_resize
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.plan import CanvasPlan
from metacanvas_core.sampling import InjectedBackbone
from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder

pack = load_pack()
NODE = pack.NODE_CLASS_MAPPINGS["MetaCanvasSampleVideo"]
FAST = dict(seed=0, steps=2, cfg=3.0, width=32, height=32, frames=9)


def call(**inputs):
    return getattr(NODE(), NODE.FUNCTION)(**inputs)


def expect_error(*fragments: str):
    pattern = "^Sample Video: " + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(ValueError, match=re.compile(pattern, re.S))


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan_node")
    torch.manual_seed(3)
    save_wan_pipeline_folder(folder, new_wan_dit(layers=2), new_wan_vae(base_dim=8), new_wan_scheduler())
    bb = load_backbone(folder)
    torch.manual_seed(0)
    conn = MetaCanvasConnector(ConnectorConfig(32, bb.dit_dim, bb.caption_channels, canvas_grid=[3, 4, 4])).eval()
    torch.nn.init.normal_(conn.canvas_fuser.proj.weight, std=0.1)
    loaded = MetaCanvasWeights(conn, "wan", "wan-node", backbone_config=bb.fingerprint())
    with torch.no_grad():
        canvas = conn.canvas_encoder(torch.randn(1, 48, 32))
    text, mask = torch.randn(1, 5, bb.caption_channels), torch.ones(1, 5, dtype=torch.long)
    empty = CanvasPlan([""], torch.randn(1, 2, bb.caption_channels), torch.ones(1, 2, dtype=torch.long),
                       canvas * 0, "wan-node")
    plan = CanvasPlan(["a red circle moves right"], text, mask, canvas, "wan-node", unconditional=empty)
    return InjectedBackbone(bb).inject(loaded), plan


def test_text_to_video_frames_latent_and_seed(wan):
    model, plan = wan
    frames, latent = call(backbone=model, positive=plan, **FAST)
    assert frames.shape == (9, 32, 32, 3) and 0 <= frames.min() and frames.max() <= 1
    assert latent["samples"].shape == (1, 16, 3, 8, 8)
    again, _ = call(backbone=model, positive=plan, **FAST)
    assert torch.equal(frames, again)
    other, _ = call(backbone=model, positive=plan, **{**FAST, "seed": 1})
    assert not torch.allclose(frames, other)


def test_image_to_video_keeps_the_start_frame_and_resizes_like_wan_image_to_video(wan):
    model, plan = wan
    image = torch.rand(1, 32, 32, 3)
    _, latent = call(backbone=model, positive=plan, start_image=image, **FAST)
    bb = model.backbone
    with torch.no_grad():
        first = bb.encode(image.permute(0, 3, 1, 2) * 2 - 1)
    assert torch.equal(latent["samples"][:, :, :1], first)
    # A 96x128 image is centre-cropped to 96x96 (aspect of 32x32), then scaled: the outer columns are dropped.
    wide = torch.rand(1, 96, 128, 3)
    pixels = cover_resize(wide.movedim(-1, 1), 32, 32) * 2 - 1  # as the start image is fitted
    expected = torch.nn.functional.interpolate(wide[:, :, 16:112].permute(0, 3, 1, 2), size=(32, 32),
                                               mode="bilinear") * 2 - 1
    assert pixels.shape == (1, 3, 32, 32) and torch.equal(pixels, expected)
    _, resized = call(backbone=model, positive=plan, start_image=wide, **FAST)
    assert resized["samples"].shape == (1, 16, 3, 8, 8)
    with torch.no_grad():  # the node's start frame is that fitted image
        assert torch.equal(resized["samples"][:, :, :1], bb.encode(expected))


def test_bad_video_inputs_name_the_node_and_the_fix(wan):
    model, plan = wan
    with expect_error("frames 8", "4k+1", "use 5 or 9"):
        call(backbone=model, positive=plan, **{**FAST, "frames": 8})
    with expect_error("width 30", "multiples of 4", "use 32"):
        call(backbone=model, positive=plan, **{**FAST, "width": 30})
    bad = {
        "is empty": torch.zeros(0, 64, 64, 3),
        "alpha channel": torch.rand(1, 64, 64, 4),
        "NaN": torch.full((1, 64, 64, 3), float("nan")),
        "all zeros": torch.zeros(1, 64, 64, 3),
        "holds 2 images": torch.rand(2, 64, 64, 3),
    }
    for fragment, image in bad.items():
        with expect_error(fragment):
            call(backbone=model, positive=plan, start_image=image, **FAST)


def test_sana_backbone_is_refused_for_clips(random_sana_dir):
    sana = InjectedBackbone(load_backbone(random_sana_dir))
    plan = CanvasPlan(["x"], torch.randn(1, 3, sana.backbone.caption_channels), torch.ones(1, 3, dtype=torch.long),
                      None, "x")
    with expect_error("makes images, not clips"):
        call(backbone=sana, positive=plan, **{**FAST, "width": 32, "height": 32})


def test_live_preview_shows_the_middle_frame(wan):
    video = importlib.import_module(f"{PACK_NAME}.nodes.video")
    sampling = importlib.import_module(f"{PACK_NAME}.nodes.sampling")
    bb = wan[0].backbone
    shown = []

    class Bar:
        def update_absolute(self, step, total, preview):
            shown.append((step, total, preview[0], np.asarray(preview[1])))

    latents = torch.randn(1, 16, 3, 8, 8)
    video._clip_preview(bb, Bar())(2, 5, latents)
    (step, total, kind, pixels), = shown
    assert (step, total, kind, pixels.shape) == (2, 5, "JPEG", (256, 256, 3))  # a 32x32 frame, enlarged
    middle = np.asarray(sampling.preview_image(bb, latents[:, :, 1:2]))
    assert np.array_equal(pixels, middle)
    assert not np.array_equal(middle, np.asarray(sampling.preview_image(bb, latents[:, :, :1])))
    big = sampling.preview_image(bb, torch.randn(1, 16, 1, 80, 80))  # too large to decode: latent channels as RGB
    assert big.size == (240, 240)


def test_sample_image_refuses_a_video_backbone(wan, monkeypatch):
    """Issue 27, point 1: Sample Image on a Wan backbone sampled a 1-frame 'image' of scattered blobs (weights that
    do not record their task, or none injected, passed every check): refuse it before sampling, pointing to
    Sample Video."""
    model, plan = wan
    monkeypatch.setattr(type(model.backbone), "predict", lambda *a, **k: pytest.fail("sampled"))
    image_node = pack.NODE_CLASS_MAPPINGS["MetaCanvasSampleImage"]
    plain = InjectedBackbone(model.backbone)
    no_canvas = CanvasPlan(plan.prompts, plan.text, plan.text_mask, None, plan.connector_name)
    for backbone, positive in ((model, plan), (plain, no_canvas)):
        with pytest.raises(ValueError, match=r"^Sample Image: the wan backbone '.*' makes clips, not images: sample "
                                             r"it with Sample Video \(--task t2v\)"):
            image_node().sample(backbone=backbone, positive=positive, seed=0, steps=2, cfg=3.0, width=32, height=32)


def test_far_size_warning_labels_a_clip_size_with_its_frames(wan):
    from metacanvas_core.errors import MetaCanvasWarning

    model, _ = wan
    conn = model.connector
    weights = MetaCanvasWeights(conn.connector, "wan", "wan-node", trained_sizes=[[32, 32, 17]])
    with pytest.warns(MetaCanvasWarning, match=r"trained at 32x32x17 \(width x height x frames\), and 128x128x17 is "
                                               r"far from that"):
        weights.warn_if_untrained(128, 128, 17)


def test_memory_refusals_name_only_sample_videos_inputs(wan, monkeypatch):
    """Issue 27, point 6: Sample Video's memory refusal named (and could propose) batch_size, an input it does not
    have; it names width, height and frames, and proposes a frame count that fits."""
    from metacanvas_core import memory

    model, plan = wan
    monkeypatch.setattr(type(model.backbone), "predict", lambda *a, **k: pytest.fail("sampled"))
    need = memory.estimate(model.backbone, width=256, height=256, batch=1, frames=33).of("sampling")
    monkeypatch.setattr(memory, "free_bytes", lambda device: need // 3)
    with pytest.raises(ValueError) as refused:
        call(backbone=model, positive=plan, **{**FAST, "width": 256, "height": 256, "frames": 33})
    message = str(refused.value)
    assert message.startswith("Sample Video: width 256, height 256, frames 33 need about "), message
    assert re.search(r": use width \d+ and height \d+ or frames \d+$", message), message
    assert "batch" not in message
    monkeypatch.setattr(memory, "free_bytes", lambda device: None)

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(type(model.backbone), "predict", out_of_memory)
    with pytest.raises(ValueError, match=r"^Sample Video: ran out of memory with width 32, height 32, frames 9 while "
                                         r"sampling") as err:
        call(backbone=model, positive=plan, **FAST)
    assert "batch" not in str(err.value)


def test_a_size_beyond_the_wan_positions_is_refused_before_sampling(wan):
    """Found by the systemic limits test once it ran Sample Video on a Wan backbone: width 8192 (inside the widget's
    limits) on the tiny Wan (4 pixels per token) is 2048 tokens across, past its rotary positions (1024), and
    diffusers failed with a raw 'view size is not compatible' error."""
    model, plan = wan
    with expect_error("width 8192 is too large for the Wan backbone", "rope_max_seq_len", "use at most 4096"):
        call(backbone=model, positive=plan, **{**FAST, "width": 8192, "height": 4})

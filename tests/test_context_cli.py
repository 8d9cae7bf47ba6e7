"""`generate --task video-edit --video ...` and `generate --task in-context --image ... [--image ...]` on a
user-given widened Wan folder and weights (none ship), with bad input named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metacanvas_core.__main__ import main
from metacanvas_core.backbones import load_backbone
from metacanvas_core.backbones.wan import widened_for_context
from metacanvas_core.checkpoints import save_connector
from metacanvas_core.pixels import load_clip, save_clip
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.world.clip_edits import render_clip_edit, sample_clip_edit
from metacanvas_core.world.tiny_models import PLANNER_HIDDEN
from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx_cli")
    torch.manual_seed(4)
    dit, vae, sched = new_wan_dit(layers=1), new_wan_vae(base_dim=8), new_wan_scheduler()
    save_wan_pipeline_folder(root / "t2v", dit, vae, sched)
    save_wan_pipeline_folder(root / "wide", widened_for_context(dit), vae, sched)
    for name in ("t2v", "wide"):
        bb = load_backbone(root / name)
        conn = MetaCanvasConnector(ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8]))
        tasks = {"t2v": ["t2v"], "wide": ["video-edit", "in-context"]}[name]
        for task in tasks:
            save_connector(root / f"{task}.safetensors", conn, bb, recipe={"task": task, "max_references": 2})
    src, _ = render_clip_edit(sample_clip_edit(np.random.default_rng(0), "recolour"), frames=9)
    clip = torch.from_numpy(src).float() / 255
    save_clip(clip, root / "src.gif", fps=8)
    save_clip(clip, root / "src_frames")
    save_clip(clip[:8], root / "eight.gif")
    save_clip(torch.nn.functional.interpolate(clip.movedim(-1, 1), size=(30, 30)).movedim(1, -1), root / "s30.gif")
    for name, size in (("ref1", 32), ("ref2", 32), ("ref3", 32), ("big", 64)):
        pixels = np.random.default_rng(size).integers(0, 256, (size, size, 3), np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")
    (root / "empty").mkdir()
    return root


def _run(root, task, *extra, backbone="wide", weights=None):
    return main(["generate", "--task", task, "--backbone", str(root / backbone), "--weights",
                 str(root / f"{weights or task}.safetensors"), "--prompt", "make the red circle green", "--steps", "1",
                 "--upscale", "1", *extra])


@pytest.mark.parametrize("still", [1, 7, 17])
def test_a_gif_with_still_stretches_reads_back_every_frame(tmp_path, still):
    """PIL stores a run of identical frames as one frame held longer; a generated clip that barely moves must still
    read back as its 17 frames (video-edit refuses a clip of the wrong length)."""
    clip = torch.rand(17, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    clip[:still] = clip[0]
    save_clip(clip, tmp_path / "c.gif", fps=8)
    assert Image.open(tmp_path / "c.gif").n_frames == 18 - still  # the writer did merge them
    back, fps = load_clip(tmp_path / "c.gif")
    assert back.shape[0] == 17 and fps == pytest.approx(8.33, abs=0.01)
    assert all(torch.equal(back[i], back[0]) for i in range(still))  # the held frame, where it was
    assert still == 17 or not torch.equal(back[still], back[0])


def test_video_edit_and_in_context_write_clips(files, tmp_path):
    clip, fps = load_clip(files / "src.gif")
    assert clip.shape == (9, 32, 32, 3) and fps == pytest.approx(8.33, abs=0.01)  # GIF durations: 10 ms units
    assert torch.equal(load_clip(files / "src_frames")[0], clip) and load_clip(files / "src_frames")[1] is None
    assert _run(files, "video-edit", "--video", str(files / "src.gif"), "--out", str(tmp_path / "e.gif")) == 0
    gif = Image.open(tmp_path / "e.gif")
    assert gif.n_frames == 9 and gif.size == (32, 32)
    assert _run(files, "video-edit", "--video", str(files / "src_frames"), "--out", str(tmp_path / "e2.gif")) == 0
    args = ("--image", str(files / "ref1.png"), "--image", str(files / "ref2.png"), "--frames", "9")
    assert _run(files, "in-context", *args, "--out", str(tmp_path / "frames")) == 0
    assert len(list((tmp_path / "frames").iterdir())) == 9


@pytest.mark.parametrize("task, extra, message", [
    ("video-edit", ("--video", "eight.gif"), "--video: frames 8 does not fit"),
    ("video-edit", ("--video", "eight.gif"), "use 5 or 9"),
    ("video-edit", ("--video", "s30.gif"), "--video: width 30 and height 30 do not fit"),
    ("video-edit", ("--video", "src.gif", "--width", "64"), "differ from the --video's 32x32x9: video editing keeps "
                                                             "its size"),
    ("video-edit", ("--video", "empty"), "holds no image frames"),
    ("video-edit", ("--video", "nope.gif"), "not a readable clip"),
    ("video-edit", (), "--task video-edit needs --video (source clip)"),
    ("t2v", ("--video", "src.gif"), "--video goes with --task video-edit (source clip), not --task t2v"),
    ("t2i", ("--image", "ref1.png"), "--image goes with --task i2v (start image) or --task edit (source image) or "
                                     "--task in-context (reference images), not --task t2i"),
    ("in-context", ("--image", "ref1.png", "--image", "big.png"), "--image have mixed sizes"),
    ("in-context", ("--image", "ref1.png", "--image", "ref2.png", "--image", "ref3.png"),
     "3 references, but the weights were trained with at most 2"),
    ("i2v", ("--image", "ref1.png", "--image", "ref2.png"), "takes one --image"),
])
def test_bad_input_is_named(files, tmp_path, capsys, monkeypatch, task, extra, message):
    monkeypatch.chdir(files)
    assert _run(files, task, *extra, "--frames", "9", "--out", str(tmp_path / "x.gif")) == 2
    assert message in capsys.readouterr().err


def test_weights_for_another_task_or_backbone(files, tmp_path, capsys, monkeypatch):
    out = ("--out", str(tmp_path / "x.gif"))
    assert _run(files, "video-edit", "--video", str(files / "src.gif"), *out, weights="in-context") == 2
    assert "trained for task 'in-context', not 'video-edit'" in capsys.readouterr().err
    assert _run(files, "video-edit", "--video", str(files / "src.gif"), *out, weights="t2v") == 2
    assert "in_channels: trained with 16, this backbone has 36" in capsys.readouterr().err
    assert _run(files, "video-edit", "--video", str(files / "src.gif"), *out, backbone="t2v", weights="t2v") == 2
    assert "trained for task 't2v'" in capsys.readouterr().err
    from metacanvas_core import builtin

    monkeypatch.setattr(builtin, "ASSETS", tmp_path / "no-assets")  # as on an install without the built-in weights
    assert main(["generate", "--task", "in-context", "--image", str(files / "ref1.png"), "--prompt", "a", *out]) == 2
    assert "--task in-context: the built-in video-context weights are missing" in capsys.readouterr().err


def test_pipeline_edits_a_clip_at_its_own_size(files):
    from metacanvas_core.builtin import PLANNER
    from metacanvas_core.errors import MetaCanvasError
    from metacanvas_core.pipeline import MetaCanvasPipeline

    pipe = MetaCanvasPipeline.from_pretrained(PLANNER, files / "wide", files / "video-edit.safetensors")
    clip = load_clip(files / "src.gif")[0]
    out = pipe("make the red circle green", given=clip, steps=1)  # the weights' task; the clip's size
    assert out.images.shape == (9, 32, 32, 3)
    with pytest.raises(MetaCanvasError, match=r"32x32x17 differ from the source clip's 32x32x9"):
        pipe("make the red circle green", task="video-edit", given=clip, frames=17, steps=1)
    with pytest.raises(MetaCanvasError, match="trained for task 'video-edit', not 'i2v'"):
        pipe("x", task="i2v", given=torch.rand(1, 32, 32, 3), steps=1)


def test_a_frame_count_other_than_the_clips_is_refused_like_a_width(files, tmp_path, capsys):
    """Issue 27, point 4: --frames 17 with a 9-frame clip silently wrote 9 frames (a conflicting --width was
    refused)."""
    out = tmp_path / "x.gif"
    assert _run(files, "video-edit", "--video", str(files / "src.gif"), "--frames", "17", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "width x height x frames 32x32x17 differ from the --video's 32x32x9" in err and not out.exists()
    assert "leave them out or set them to it" in err
    assert _run(files, "video-edit", "--video", str(files / "src.gif"), "--frames", "9", "--out", str(out)) == 0


def test_text_to_image_on_a_video_backbone_is_refused(files, tmp_path, capsys):
    """Issue 27, point 1, on the command line: weights that do not record their task passed every check and a Wan
    backbone drew a 1-frame clip of blobs as the 'image'."""
    bb = load_backbone(files / "t2v")
    conn = MetaCanvasConnector(ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8]))
    save_connector(tmp_path / "untold.safetensors", conn, bb)  # no recipe: no task to check
    out = tmp_path / "x.png"
    code = main(["generate", "--task", "t2i", "--backbone", str(files / "t2v"), "--weights",
                 str(tmp_path / "untold.safetensors"), "--prompt", "a red circle", "--steps", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "makes clips, not images: sample it with Sample Video (--task t2v)" in err, err
    assert not out.exists()


def test_a_clip_far_from_the_trained_size_is_refused_before_sampling(files, tmp_path, capsys, monkeypatch):
    """Issue 27, point 5: a clip written by generate (8x enlarged by its default --upscale 8) and fed back to video
    editing ran at 256x256 for 11 minutes and gave fragments, with a warning that never said why. The clip's size
    is not a choice made for the run, so it is refused before sampling, saying what to pass instead."""
    import importlib

    from editor_graph import PACK_NAME, load_pack
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import CanvasPlan
    from metacanvas_core.sampling import InjectedBackbone

    bb = load_backbone(files / "wide")
    conn = MetaCanvasConnector(ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8]))
    sized = tmp_path / "sized.safetensors"
    save_connector(sized, conn, bb, recipe={"task": "video-edit"}, trained_sizes=[[32, 32, 9]])
    clip, _ = load_clip(files / "src.gif")
    big = clip.repeat_interleave(4, 1).repeat_interleave(4, 2)  # what --upscale 4 writes
    save_clip(big, tmp_path / "big.gif", fps=8)
    monkeypatch.setattr(type(bb), "predict", lambda *a, **k: pytest.fail("sampled"))
    out = tmp_path / "e.gif"
    code = main(["generate", "--task", "video-edit", "--backbone", str(files / "wide"), "--weights", str(sized),
                 "--video", str(tmp_path / "big.gif"), "--prompt", "make the red circle green", "--steps", "1",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "--video is 128x128x9, far from the 32x32x9 (width x height x frames) the MetaCanvas weights 'sized' were " \
           "trained at" in err, err
    assert "downscale it to 32x32" in err and "4x the size it was made at" in err, err
    assert "write it with --upscale 1" in err, err
    model = InjectedBackbone(bb).inject(load_connector(sized))
    model.connector.check_given_size(32, 32, 9, "--video")  # the trained size passes

    pack = load_pack()
    comfy_glue = importlib.import_module(f"{PACK_NAME}.nodes.comfy")
    node = pack.NODE_CLASS_MAPPINGS["MetaCanvasSampleVideo"]
    plan = CanvasPlan(["make it green"], torch.randn(1, 4, bb.caption_channels), torch.ones(1, 4, dtype=torch.long),
                      None, "sized")
    with pytest.raises(comfy_glue.NodeError, match=r"^Sample Video: source_video is 128x128x9, far from the 32x32x9 "
                                                   r".*downscale it to 32x32"):
        node().sample(model, plan, seed=0, steps=1, cfg=1.0, width=128, height=128, frames=9, source_video=big)

"""`train video-context`: both stages on top of a (tiny, untrained) text-to-video backbone, widened at the start;
the exported folder + weights load under the built-in names and `generate --task video-edit` / `--task in-context`
sample with them; the widened DiT starts out as the t2v backbone."""

from __future__ import annotations

import argparse
import numpy as np
import pytest
import torch
from safetensors import safe_open
from PIL import Image

from metacanvas_core import builtin
from metacanvas_core.__main__ import main as cli
from metacanvas_core.backbones import load_backbone
from metacanvas_core.backbones.base import Conditioning
from metacanvas_core.builtin import PLANNER
from metacanvas_core.checkpoints import load_connector, save_connector
from metacanvas_core.pixels import save_clip
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.training import publish
from metacanvas_core.training.tasks.base import sample_rng
from metacanvas_core.training.cli import train_parser
from metacanvas_core.training.tasks.video_context import VideoContext
from metacanvas_core.training.tasks.wan_vae import clip_pixels
from metacanvas_core.world import clips
from metacanvas_core.world.clip_edits import render_clip_edit, sample_clip_edit
from metacanvas_core.world.tiny_models import PLANNER_HIDDEN
from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    """A tiny text-to-video Wan folder (2 layers, base_dim 8 VAE) and its global weights, as train_video.sh's
    global_run leaves them."""
    root = tmp_path_factory.mktemp("t2v_base")
    torch.manual_seed(7)
    save_wan_pipeline_folder(root / "backbone", new_wan_dit(layers=2), new_wan_vae(base_dim=8), new_wan_scheduler())
    bb = load_backbone(root / "backbone")
    cfg = ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8], use_canvas=False)
    save_connector(root / "global_base_t2v.safetensors", MetaCanvasConnector(cfg), bb, recipe={"task": "t2v"})
    return root


def _args(t2v, **kw) -> argparse.Namespace:
    """The task's flags as the CLI parses them (stage metacanvas, fresh draws), `kw` overriding."""
    args = train_parser("video-context").parse_args(
        ["--stage", "metacanvas", "--planner", str(PLANNER), "--base", str(t2v / "backbone"), "--base-connector",
         str(t2v / "global_base_t2v.safetensors"), "--pool", "0", "--out", str(t2v / "run")])
    return argparse.Namespace(**{**vars(args), **kw})


def test_two_stages_export_load_and_generate_both_tasks(t2v, tmp_path, monkeypatch):
    base = ["--planner", PLANNER, "--base", t2v / "backbone", "--base-connector", t2v / "global_base_t2v.safetensors",
            "--steps", "2", "--batch", "2", "--warmup", "1", "--in-context-share", "0.5"]
    runs = tmp_path / "runs"  # scripts/train_video_context.sh's layout
    assert cli(["train", "video-context", "--stage", "metacanvas", *map(str, base),
                "--out", str(runs / "metacanvas_run")]) == 0
    assert cli(["train", "video-context", "--stage", "global-continue", *map(str, base),
                "--out", str(runs / "global_continue_run")]) == 0
    w = load_connector(runs / "metacanvas_run" / "metacanvas_video_context.safetensors")
    assert w.method == "metacanvas" and w.recipe["task"] == "video-context" and w.trained_sizes == [[32, 32, 17]]
    assert w.recipe["serves"] == ["video-edit", "in-context"] and w.recipe["max_references"] == 2
    assert w.connector.config.canvas_grid == [3, 8, 8] and w.dit.kind == "transformer"  # the trained DiT beside
    g = load_connector(runs / "global_continue_run" / "global_video_context.safetensors")
    assert g.method == "global" and g.dit.kind == "transformer"
    assert load_backbone(runs / "metacanvas_run" / "backbone").mask_channels == 4

    assets = tmp_path / "assets"  # publish writes the built-in names (float16) here
    monkeypatch.setattr(builtin, "ASSETS", assets)
    monkeypatch.setattr(publish, "ASSETS", assets)
    publish.main(["--video-context-runs", str(runs)])
    assert (assets / builtin.WAN_VIDEO_CONTEXT / "model_index.json").is_file()
    published = load_connector(assets / "global_video_context.safetensors")
    assert published.dit.path == assets / "global_video_context_dit"
    with safe_open(str(published.dit.path / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
        assert f.get_tensor("patch_embedding.weight").dtype == torch.float16
    src, _ = render_clip_edit(sample_clip_edit(np.random.default_rng(1), "recolour"))
    save_clip(torch.from_numpy(src).float() / 255, tmp_path / "src.gif", fps=8)
    ref = np.zeros((32, 32, 3), np.uint8)
    ref[10:22, 10:22] = (255, 0, 0)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    common = ["--steps", "1", "--upscale", "1"]
    for method in ("metacanvas", "global"):
        assert cli(["generate", "--task", "video-edit", "--method", method, "--video", str(tmp_path / "src.gif"),
                    "--prompt", "make the red circle green", "--out", str(tmp_path / f"e_{method}.gif"), *common]) == 0
        assert Image.open(tmp_path / f"e_{method}.gif").n_frames == 17
    assert cli(["generate", "--task", "in-context", "--image", str(tmp_path / "ref.png"), "--width", "32", "--height",
                "32", "--prompt", "the red square moves from left to right", "--out", str(tmp_path / "i.gif"),
                *common]) == 0
    assert Image.open(tmp_path / "i.gif").size == (32, 32)


def test_no_builtin_weights_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(builtin, "ASSETS", tmp_path)
    assert cli(["generate", "--task", "in-context", "--image", str(tmp_path / "r.png"), "--prompt", "a",
                "--out", str(tmp_path / "o.gif")]) == 2
    err = capsys.readouterr().err
    assert "the built-in video-context weights are missing" in err and "wan_video_context/" in err


def test_widened_dit_at_step_0_is_the_t2v_backbone_bit_for_bit(t2v):
    """The task's DiT before any step, fed a real batch's context, predicts exactly what the t2v DiT does."""
    task = VideoContext(_args(t2v, stage="global-continue"), torch.device("cpu"), torch.float32)
    samples = [task.sample(sample_rng(0, 0, i), 0, i) for i in range(2)]
    batch = task.batch(samples)
    assert batch["context"].shape == batch["z"].shape and batch["context"].abs().sum() > 0
    t2v_bb = load_backbone(t2v / "backbone")
    zt, t = torch.stack(batch["noise"]), torch.tensor([0.7, 0.7]) * 1000
    text = torch.randn(2, 5, t2v_bb.caption_channels)
    mask = torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        wide = task.bb.predict(zt, t, text, mask, Conditioning(context=batch["context"],
                                                               context_mask=batch["context_mask"]))
        assert torch.equal(wide, t2v_bb.predict(zt, t, text, mask))
        assert torch.isfinite(task.loss(batch))


def test_samples_are_seeded_per_step_and_index_and_mix_both_tasks(t2v):
    task = VideoContext(_args(t2v, stage="global-continue", in_context_share=0.5), torch.device("cpu"),
                        torch.float32)
    draw = [task.sample(sample_rng(0, 3, i), 3, i).data for i in range(8)]
    again = task.sample(sample_rng(0, 3, 5), 3, 5).data
    assert np.array_equal(draw[5]["ex"].target, again["ex"].target)
    assert draw[5]["text_prompt"] == again["text_prompt"]
    kinds = {x["ex"].extra["references"] is None for x in draw}
    assert kinds == {True, False}  # both edits and reference scenes at share 0.5
    assert all(x["ex"].target.shape == (clips.FRAMES, clips.SIZE, clips.SIZE, 3) for x in draw)


def test_base_must_be_a_text_to_video_folder(t2v, tmp_path):
    from metacanvas_core.errors import MetaCanvasError

    task = VideoContext(_args(t2v, stage="global-continue"), torch.device("cpu"), torch.float32)
    save_wan_pipeline_folder(tmp_path / "wide", task.bb.transformer, task.bb.vae, task.bb.scheduler)
    with pytest.raises(MetaCanvasError, match="give the text-to-video Wan folder"):
        VideoContext(_args(t2v, base=tmp_path / "wide"), torch.device("cpu"), torch.float32)


def test_pool_batches_equal_fresh_ones_and_encode_once(t2v, monkeypatch):
    """On a pool, a batch's conditioning, targets and seen-text states are those of the samples' own inputs (to
    float16 rounding), computed once per pool example."""
    task = VideoContext(_args(t2v, stage="global-continue", pool=2), torch.device("cpu"), torch.float32)
    samples = [task.sample(sample_rng(0, 0, i), 0, i) for i in range(6)]
    first = task.batch(samples)
    calls = []
    encode = task.bb.encode
    monkeypatch.setattr(task.bb, "encode", lambda x: calls.append(len(x)) or encode(x))
    again = task.batch(samples)
    assert not calls
    for key in ("z", "context", "context_mask", "text_states"):
        assert torch.equal(first[key], again[key])
    x = samples[0].data["ex"]
    inputs = task.src._inputs(x)
    # (a VAE batch of one differs from a batch of several in the last bits: close, not equal)
    assert torch.allclose(first["context"][0], inputs.conditioning.context[0], atol=2e-3)
    assert torch.equal(first["context_mask"][0], inputs.conditioning.context_mask[0])
    assert torch.allclose(first["z"][0], encode(clip_pixels(x.target)[None])[0], atol=2e-3)

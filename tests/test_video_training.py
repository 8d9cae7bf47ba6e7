"""The video tasks on the one trainer: the tiny Wan VAE, then text/image-to-video stages global, metacanvas (k
keyframes) and global-continue; the exported weights load with the Wan folder and sample clips."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from metacanvas_core.__main__ import main as cli
from metacanvas_core.builtin import PLANNER
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.training.tasks.base import sample_rng
from metacanvas_core.training.tasks.video import TextToVideo
from metacanvas_core.world import clips


def train(*args) -> int:
    return cli(["train", *map(str, args)])


def test_vae_then_three_stages_export_and_sample(tmp_path):
    fast = ["--steps", "2", "--batch", "2", "--warmup", "1"]
    assert train("vae-wan", "--out", tmp_path / "v", "--base-dim", "16", "--crop", "16", *fast) == 0
    vae_cfg = json.loads((tmp_path / "v" / "vae" / "config.json").read_text())
    assert vae_cfg["latents_std"] != [1.0] * 16 and vae_cfg["latents_mean"] != [0.0] * 16  # measured, per channel
    assert train("video", "--stage", "global", "--planner", PLANNER, "--vae", tmp_path / "v" / "vae",
                 "--out", tmp_path / "g", *fast) == 0
    base = ["--planner", PLANNER, "--base", tmp_path / "g" / "backbone",
            "--base-connector", tmp_path / "g" / "global_base_t2v.safetensors", *fast]
    assert train("video", "--stage", "metacanvas", "--keyframes", "3", "--i2v-share", "0.5", *base,
                 "--out", tmp_path / "m") == 0
    assert train("video", "--stage", "global-continue", *base, "--out", tmp_path / "c") == 0
    w = load_connector(tmp_path / "m" / "metacanvas_t2v.safetensors")
    assert w.method == "metacanvas" and w.trained_sizes == [[32, 32, 17]] and w.recipe["task"] == "t2v"
    assert w.connector.config.canvas_grid == [3, 8, 8] and w.connector.config.keyframe_seconds == 1.0
    assert load_connector(tmp_path / "c" / "global_t2v.safetensors").method == "global"
    pipe = MetaCanvasPipeline.from_pretrained(PLANNER, tmp_path / "g" / "backbone", tmp_path / "m" /
                                              "metacanvas_t2v.safetensors")
    start = torch.rand(1, 32, 32, 3)
    out = pipe("a red circle moves from left to right", width=32, height=32, frames=17, steps=2,
               start_image=start)
    assert out.latents.shape == (1, 16, 5, 8, 8) and torch.isfinite(out.latents).all()


def test_i2v_loss_ignores_the_given_frame(tmp_path):
    """With the first latent frame given clean, nothing about that frame (its noise, its target) enters the loss;
    without, it does."""
    torch.manual_seed(0)
    from metacanvas_core.world import tiny_wan

    tiny_wan.save_wan_pipeline_folder(tmp_path / "wan", tiny_wan.new_wan_dit(layers=1), tiny_wan.new_wan_vae(16),
                                      tiny_wan.new_wan_scheduler())
    args = argparse.Namespace(stage="global-continue", planner=PLANNER, base=tmp_path / "wan", base_connector=None,
                              vae=None, keyframes=1, i2v_share=0.5, canvas_lr_scale=1.0, text_only_dropout=0.0,
                              timestep_sampling="uniform")
    task = TextToVideo(args, torch.device("cpu"), torch.float32)
    samples = [task.sample(sample_rng(0, 0, i), 0, i) for i in range(2)]
    for s, i2v in zip(samples, (False, True)):
        s.data["i2v"] = i2v
    batch = task.batch(samples)
    assert batch["z"].shape == (2, 16, 5, 8, 8)
    with torch.no_grad():
        loss = task.loss(batch)
        for i, changes in ((1, False), (0, True)):
            other = dict(batch, noise=batch["noise"].clone())
            other["noise"][i, :, 0] += 1.0
            assert (task.loss(other) != loss) == changes


def test_planner_reads_larger_frames_at_its_trained_size():
    """The tiny planner folder's own Qwen processor scales a 64x64 frame to the 32x32 it was trained on (the same
    patch grid as a 32x32 frame, and nearly the same pixels); a released planner's limits would keep it."""
    from metacanvas_core.builtin import PLANNER
    from metacanvas_core.planner import Planner
    from metacanvas_core.visual_inputs import prepare_visuals

    planner = Planner.from_pretrained(PLANNER)
    scene = clips.sample_clip(np.random.default_rng(0))
    small, large = clips.render_clip(scene)[0], clips.render_clip(scene, size=64)[0]
    seen = [prepare_visuals(planner.image_processor, planner.model.config, [[im]]) for im in (small, large)]
    assert seen[0].image_grid_thw.tolist() == seen[1].image_grid_thw.tolist() == [[1, 8, 8]]
    assert (seen[0].pixel_values - seen[1].pixel_values).abs().mean() < 0.25


def test_vae_loss_reads_the_decoder_before_its_clamp():
    """The loss's reconstruction is `decode`'s output without the [-1, 1] clamp (which passes no gradient)."""
    from metacanvas_core.training.tasks.base import sample_rng as rng
    from metacanvas_core.training.tasks.wan_vae import WanVaePretraining

    torch.manual_seed(0)
    task = WanVaePretraining(argparse.Namespace(base_dim=16, frames=5, crop=32, kl_weight=0.0), torch.device("cpu"),
                             torch.float32)
    with torch.no_grad():
        task.vae.decoder.conv_out.bias.fill_(3.0)  # overshoots everywhere
        z = task.vae.encode(task.batch([task.sample(rng(0, 0, 0), 0, 0)])["x"]).latent_dist.mode()
        rec, clamped = task._unclamped_decode(z), task.vae.decode(z).sample
    assert rec.shape == clamped.shape and rec.max() > 1.5
    assert torch.equal(rec.clamp(-1, 1), clamped)

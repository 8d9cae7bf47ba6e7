"""The video tasks on the one trainer: the tiny Wan VAE, then text/image-to-video stages global, metacanvas (k
keyframes) and global-continue; the exported weights load with the Wan folder and sample clips."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from metacanvas_core.__main__ import main as cli
from metacanvas_core.builtin import PLANNER
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.training.cli import train_parser
from metacanvas_core.training.tasks.base import sample_rng
from metacanvas_core.training.tasks.video import TextToVideo
from metacanvas_core.training.tasks.wan_vae import clip_pixels
from metacanvas_core.world import clips


def train(*args) -> int:
    return cli(["train", *map(str, args)])


def test_vae_then_three_stages_export_and_sample(tmp_path):
    fast = ["--steps", "2", "--batch", "2", "--warmup", "1"]
    assert train("vae-wan", "--out", tmp_path / "v", "--base-dim", "16", "--crop", "16", *fast) == 0
    vae_cfg = json.loads((tmp_path / "v" / "vae" / "config.json").read_text())
    assert vae_cfg["latents_std"] != [1.0] * 16 and vae_cfg["latents_mean"] != [0.0] * 16  # measured, per channel
    assert train("video", "--stage", "global", "--planner", PLANNER, "--vae", tmp_path / "v" / "vae",
                 "--dit-heads", "2", "--out", tmp_path / "g", *fast) == 0
    dit_cfg = json.loads((tmp_path / "g" / "backbone" / "transformer" / "config.json").read_text())
    assert (dit_cfg["num_attention_heads"], dit_cfg["attention_head_dim"]) == (2, 64)
    base = ["--planner", PLANNER, "--base", tmp_path / "g" / "backbone",
            "--base-connector", tmp_path / "g" / "global_base_t2v.safetensors", *fast]
    with pytest.raises(SystemExit, match="2"):  # later stages keep the base DiT: widening there is an error
        train("video", "--stage", "metacanvas", "--dit-heads", "3", *base, "--out", tmp_path / "x")
    assert train("video", "--stage", "metacanvas", "--keyframes", "3", "--i2v-share", "0.5", *base,
                 "--out", tmp_path / "m") == 0
    assert train("video", "--stage", "global-continue", *base, "--out", tmp_path / "c") == 0
    w = load_connector(tmp_path / "m" / "metacanvas_t2v.safetensors")
    assert w.method == "metacanvas" and w.trained_sizes == [[32, 32, 17]] and w.recipe["task"] == "t2v"
    assert w.connector.config.canvas_grid == [3, 8, 8] and w.connector.config.keyframe_seconds == 1.0
    assert load_connector(tmp_path / "c" / "global_t2v.safetensors").method == "global"
    # --freeze-canvas-tokens: the tokens stay at their seeded init (the same at any LR) while the rest of the
    # canvas connector trains; unfrozen, the same seed's tokens move (once the zero-initialised output lets a
    # gradient through: a few steps).
    for out, extra in (("f1", ["--freeze-canvas-tokens"]), ("f2", ["--freeze-canvas-tokens", "--lr", "1e-2"]),
                       ("u", ["--lr", "1e-2"])):
        assert train("video", "--stage", "metacanvas", *base, "--steps", "4", *extra, "--out", tmp_path / out) == 0
    f1, f2, u = (load_connector(tmp_path / o / "metacanvas_t2v.safetensors") for o in ("f1", "f2", "u"))
    assert f1.recipe["freeze_canvas_tokens"] is True and u.recipe["freeze_canvas_tokens"] is False
    assert torch.equal(f1.connector.canvas_tokens, f2.connector.canvas_tokens)
    assert not torch.equal(f2.connector.canvas_tokens, u.connector.canvas_tokens)
    enc1, enc2 = f1.connector.canvas_encoder.state_dict(), f2.connector.canvas_encoder.state_dict()
    assert any(not torch.equal(enc1[k], enc2[k]) for k in enc1)
    pipe = MetaCanvasPipeline.from_pretrained(PLANNER, tmp_path / "g" / "backbone", tmp_path / "m" /
                                              "metacanvas_t2v.safetensors")
    start = torch.rand(1, 32, 32, 3)
    out = pipe("a red circle moves from left to right", width=32, height=32, frames=17, steps=2,
               task="i2v", given=start)
    assert out.latents.shape == (1, 16, 5, 8, 8) and torch.isfinite(out.latents).all()


def test_i2v_loss_ignores_the_given_frame(tmp_path):
    """With the first latent frame given clean, nothing about that frame (its noise, its target) enters the loss;
    without, it does."""
    torch.manual_seed(0)
    from metacanvas_core.world import tiny_wan

    tiny_wan.save_wan_pipeline_folder(tmp_path / "wan", tiny_wan.new_wan_dit(layers=1), tiny_wan.new_wan_vae(16),
                                      tiny_wan.new_wan_scheduler())
    args = train_parser("video").parse_args(["--stage", "global-continue", "--planner", str(PLANNER), "--base",
                                             str(tmp_path / "wan"), "--keyframes", "1", "--pool", "0",
                                             "--out", str(tmp_path / "run")])
    task = TextToVideo(args, torch.device("cpu"), torch.float32)
    samples = [task.sample(sample_rng(0, 0, i), 0, i) for i in range(2)]
    for s, kind in zip(samples, ("t2v", "i2v")):
        s.data["kind"] = kind
    batch = task.batch(samples)
    assert [z.shape for z in batch["z"]] == [(16, 5, 8, 8)] * 2
    with torch.no_grad():
        loss = task.loss(batch)
        for i, changes in ((1, False), (0, True)):
            other = dict(batch, noise=[n.clone() for n in batch["noise"]])
            other["noise"][i][:, 0] += 1.0
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
    task = WanVaePretraining(argparse.Namespace(base_dim=16, latent_channels=16, frames=5, crop=32,
                                                kl_weight=0.0, init=None), torch.device("cpu"),
                             torch.float32)
    with torch.no_grad():
        task.vae.decoder.conv_out.bias.fill_(3.0)  # overshoots everywhere
        z = task.vae.encode(task.batch([task.sample(rng(0, 0, 0), 0, 0)])["x"]).latent_dist.mode()
        rec, clamped = task._unclamped_decode(z), task.vae.decode(z).sample
    assert rec.shape == clamped.shape and rec.max() > 1.5
    assert torch.equal(rec.clamp(-1, 1), clamped)


def _video_task(tmp_path, *flags: str) -> TextToVideo:
    from metacanvas_core.world import tiny_wan

    torch.manual_seed(0)
    if not (tmp_path / "wan").is_dir():
        tiny_wan.save_wan_pipeline_folder(tmp_path / "wan", tiny_wan.new_wan_dit(layers=1), tiny_wan.new_wan_vae(8),
                                          tiny_wan.new_wan_scheduler())
    args = train_parser("video").parse_args(["--stage", "global-continue", "--planner", str(PLANNER), "--base",
                                             str(tmp_path / "wan"), "--out", str(tmp_path / "run"), *flags])
    return TextToVideo(args, torch.device("cpu"), torch.float32)


def test_pool_examples_are_fixed_and_their_latents_encoded_once(tmp_path, monkeypatch):
    """Pool example k is the same clip whichever sample draws it; its latents are encoded once, kept on disk under
    --cache-dir, and equal to a fresh encode (to float16 rounding, the same rounding every time)."""
    task = _video_task(tmp_path, "--pool", "3", "--cache-dir", str(tmp_path / "cache"))
    samples = [task.sample(sample_rng(0, s, i), s, i) for s in range(3) for i in range(4)]
    keys = {s.data["ex"].key for s in samples}
    assert keys <= {"clip:0", "clip:1", "clip:2"} and len(keys) > 1
    first = {}
    for s in samples:
        first.setdefault(s.data["ex"].key, s.data["ex"].target)
        assert np.array_equal(first[s.data["ex"].key], s.data["ex"].target)
    calls = []
    encode = task.bb.encode
    monkeypatch.setattr(task.bb, "encode", lambda x: calls.append(len(x)) or encode(x))
    z = task.batch(samples)["z"]
    assert sum(calls) == len(keys)  # each pool clip once
    fresh = encode(torch.stack([clip_pixels(first[k]) for k in sorted(keys)]))
    by_key = {s.data["ex"].key: zi for s, zi in zip(samples, z)}
    for k, f in zip(sorted(keys), fresh):
        assert torch.equal(by_key[k], f.half().float())
    again = _video_task(tmp_path, "--pool", "3", "--cache-dir", str(tmp_path / "cache"))  # a resumed run
    calls.clear()
    monkeypatch.setattr(again.bb, "encode", lambda x: calls.append(len(x)) or encode(x))
    assert all(torch.equal(a, b) for a, b in zip(again.batch(samples)["z"], z)) and not calls


def test_image_share_trains_still_images_as_one_frame_clips(tmp_path):
    task = _video_task(tmp_path, "--image-share", "0.5", "--pool", "0")
    samples = [task.sample(sample_rng(0, 0, i), 0, i) for i in range(8)]
    kinds = [s.data["kind"] for s in samples]
    assert "image" in kinds and {"t2v", "i2v"} & set(kinds)
    batch = task.batch(samples)
    for kind, z in zip(kinds, batch["z"]):
        assert z.shape == ((16, 1, 8, 8) if kind == "image" else (16, 5, 8, 8))
    loss = task.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and task.bb.transformer.patch_embedding.weight.grad.abs().sum() > 0


def test_vae_fine_tune_starts_from_the_given_vae(tmp_path, capsys):
    """--init fine-tunes a trained VAE (its width and channels, its weights) instead of a fresh one; at LR 0 its
    weights come out unchanged, and a folder that holds no Wan VAE is refused naming the flag (--init, and the video
    DiT's --vae)."""
    from safetensors.torch import load_file

    fast = ["--steps", "1", "--batch", "1", "--warmup", "1", "--crop", "16"]
    assert train("vae-wan", "--out", tmp_path / "v", "--base-dim", "8", "--latent-channels", "16", *fast) == 0
    assert train("vae-wan", "--init", tmp_path / "v" / "vae", "--out", tmp_path / "ft", "--frames", "17",
                 "--lr", "0", *fast) == 0
    before = load_file(tmp_path / "v" / "vae" / "diffusion_pytorch_model.safetensors")
    after = load_file(tmp_path / "ft" / "vae" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "ft" / "vae" / "config.json").read_text())["base_dim"] == 8
    with pytest.raises(SystemExit) as refused:
        train("vae-wan", "--init", tmp_path / "nowhere", "--out", tmp_path / "x", *fast)
    assert refused.value.code == 2 and "--init" in capsys.readouterr().err
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text((tmp_path / "v" / "vae" / "config.json").read_text())
    with pytest.raises(SystemExit) as refused:
        train("vae-wan", "--init", tmp_path / "config_only", "--out", tmp_path / "x", *fast)
    assert refused.value.code == 2 and "diffusion_pytorch_model.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # the DiT's --vae is checked the same way
        train("video", "--stage", "global", "--planner", PLANNER, "--vae", tmp_path / "config_only",
              "--out", tmp_path / "x", *fast[:-2])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--vae" in err and "diffusion_pytorch_model.safetensors" in err

"""The clip benchmark (`evaluate --task t2v|i2v`), `bench --task t2v` and the built-in video entries, on an untrained
tiny Wan folder and untrained weights placed where the built-in video weights will ship (mechanics, not quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from metacanvas_core import benchmarks, builtin, tasks
from metacanvas_core.__main__ import main
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.planner import Planner
from metacanvas_core.world import clips

CLIP_KEYS = {"overall", "motion_direction", "start_cell", "end_cell", "still_objects", "colour_constant",
             "shape_constant", "flicker"}


def _calls(monkeypatch) -> list[dict]:
    """Record what every pipeline call is asked for."""
    seen, real = [], MetaCanvasPipeline.__call__
    monkeypatch.setattr(MetaCanvasPipeline, "__call__",
                        lambda self, prompt, **kw: seen.append({"prompt": prompt, **kw}) or real(self, prompt, **kw))
    return seen


def test_video_entries_appear_only_where_the_video_weights_are(builtin_video, tmp_path, monkeypatch):
    from editor_graph import load_pack

    comfy = load_pack().nodes.comfy  # the pack as ComfyUI imports it
    backbone_choices, connector_choices = comfy.backbone_choices, comfy.connector_choices

    assert set(builtin.VIDEO_MODELS.shipped()) == {"metacanvas", "metacanvas-k1", "global"}
    assert "built-in tiny: wan_t2v" in backbone_choices() and "built-in tiny: sana_t2i" in backbone_choices()
    assert {"built-in tiny: metacanvas_t2v", "built-in tiny: metacanvas_t2v_k1", "built-in tiny: global_t2v",
            "built-in tiny: metacanvas_t2i"} <= set(connector_choices())
    (builtin_video / "metacanvas_t2v_k1.safetensors").rename(tmp_path / "k1.safetensors")
    try:  # a weights file missing: that method is simply not offered
        assert set(builtin.VIDEO_MODELS.shipped()) == {"metacanvas", "global"}
    finally:
        (tmp_path / "k1.safetensors").rename(builtin_video / "metacanvas_t2v_k1.safetensors")
    monkeypatch.setattr(builtin, "ASSETS", tmp_path)  # no Wan folder: no video methods at all
    assert builtin.VIDEO_MODELS.shipped() == {} and backbone_choices() == {}


def test_without_video_weights_the_cli_says_to_pass_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(builtin, "ASSETS", tmp_path)
    for argv in (["evaluate", "--task", "t2v"], ["bench", "--task", "t2v"], ["evaluate", "--task", "i2v"],
                 ["generate", "--task", "t2v", "--prompt", "a red circle", "--out", str(tmp_path / "x.gif")]):
        assert main(argv) == 2
        assert "the built-in video weights are missing" in capsys.readouterr().err


def test_text_to_video_benchmark_same_prompts_and_seeds_for_every_method_then_table(
    builtin_video, tmp_path, monkeypatch, capsys
):
    seen = _calls(monkeypatch)
    out = {}
    for method in ("metacanvas", "global", "metacanvas-k1"):
        out[method] = tmp_path / f"{method}.json"
        assert main(["evaluate", "--task", "t2v", "--method", method, "--n", "2", "--steps", "1",
                     "--json", str(out[method])]) == 0
    r = json.loads(out["metacanvas"].read_text())
    assert set(r["scores"]) == CLIP_KEYS and r["task"] == "t2v" and r["method"] == "metacanvas"
    assert all(0 <= v <= 1 for v in r["scores"].values()) and "first_frame_psnr" not in r
    passes = [r["scores"][k] for k in CLIP_KEYS - {"overall", "flicker"}]
    assert r["scores"]["overall"] == pytest.approx(np.mean(passes))
    scenes = clips.benchmark_clips(2)  # the held-out split
    assert all(clips.is_held_out(s.moving, s.still) for s in scenes)
    assert [c["prompt"] for c in seen] == [[s.caption for s in scenes]] * 3
    assert [c["seed"] for c in seen] == [[0, 1]] * 3 and all(c["frames"] == 17 and c["width"] == 32 for c in seen)
    assert all(c["text_prompt"] is None and c["given"] is None for c in seen)
    seen.clear()
    empty = tmp_path / "empty.json"
    assert main(["evaluate", "--task", "t2v", "--n", "2", "--steps", "1", "--canvas-only", "--json", str(empty)]) == 0
    assert seen[0]["text_prompt"] == ["", ""] and json.loads(empty.read_text())["canvas_only"]
    capsys.readouterr()
    assert main(["table", *map(str, out.values()), str(empty)]) == 0
    text = capsys.readouterr().out
    assert "| method | task | text to DiT | motion direction |" in text and "flicker" in text
    for row in ("| metacanvas | t2v | prompt |", "| global | t2v | prompt |", "| metacanvas-k1 | t2v | prompt |",
                "| metacanvas | t2v | empty |"):
        assert row in text
    assert "| single_object |" not in text  # no image table without image results


def test_image_to_video_starts_from_the_true_first_frame_the_planner_sees(builtin_video, tmp_path, monkeypatch):
    seen = _calls(monkeypatch)
    visuals, encode = [], Planner.encode
    monkeypatch.setattr(Planner, "encode", lambda self, *a, **kw: visuals.append(kw.get("visuals"))
                        or encode(self, *a, **kw))
    out = tmp_path / "i2v.json"
    assert main(["evaluate", "--task", "i2v", "--n", "2", "--steps", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["scores"]) == CLIP_KEYS and r["task"] == "i2v"
    assert np.isfinite(r["first_frame_psnr"]) and r["first_frame_psnr"] > 0
    scenes = clips.benchmark_clips(2)
    given = seen[0]["given"]
    assert given.shape == (2, 32, 32, 3)
    assert torch.equal(given, torch.from_numpy(np.stack([clips.start_image(s) for s in scenes])).float() / 255)
    shown = [v for v in visuals if v is not None][0]  # each prompt's plan sees its own start image
    assert len(shown) == 2 and all(len(v) == 1 for v in shown)
    assert np.array_equal(shown[1][0], (given[1].numpy() * 255 + 0.5).astype(np.uint8))


def test_clip_vae_round_trip_and_psnr(builtin_video, tmp_path):
    out = tmp_path / "vae.json"
    assert main(["evaluate", "--task", "i2v", "--vae-round-trip", "--n", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["method"] == "true renders, VAE round trip" and set(r["scores"]) == CLIP_KEYS and "first_frame_psnr" in r
    a = np.zeros((4, 4, 3))
    assert benchmarks.psnr(a, a) == 100.0 and benchmarks.psnr(a, a + 0.1) == pytest.approx(20.0)
    with pytest.raises(Exception, match="no task 't2x'"):
        tasks.task("t2x")


def test_bench_t2v_times_plain_metacanvas_and_one_keyframe_side_by_side(builtin_video, tmp_path, monkeypatch):
    from metacanvas_core import sampling_cost

    calls, real_sample = [], sampling_cost.sample
    monkeypatch.setattr(sampling_cost, "sample", lambda *a, **kw: calls.append((a[0], kw["frames"])) or real_sample(*a, **kw))
    out = tmp_path / "bench.json"
    assert main(["bench", "--task", "t2v", "--frames", "9", "--steps", "1", "--repeats", "1", "--json", str(out)]) == 0
    assert len(calls) == 3 * (1 + 1) and {f for _, f in calls} == {9}
    models = [m for m, _ in calls]
    assert len({id(m) for m in models}) == 3 and models[:3] == models[3:]  # alternating rounds of the three
    r = json.loads(out.read_text())
    assert r["task"] == "t2v" and r["frames"] == 9 and r["width"] == 32 and r["keyframes"] == 3
    k1 = r["compare"]["metacanvas_t2v_k1"]
    assert k1["keyframes"] == 1 and k1["sampling_s"] > 0
    assert k1["metacanvas_vs_this"] == pytest.approx(r["metacanvas_sampling_s"] / k1["sampling_s"], rel=0.02)
    # The per-step block runs on every latent frame whatever k is: the same FLOPs for 1 and 3 keyframes.
    assert k1["connector_flops_per_step"] == r["connector_flops_per_step"] > 0
    assert main(["table", str(out)]) == 0


def test_generate_t2v_defaults_to_the_builtin_video_weights(builtin_video, tmp_path, monkeypatch):
    seen = _calls(monkeypatch)
    assert main(["generate", "--task", "t2v", "--prompt", "a red circle moves from left to right", "--frames", "5",
                 "--steps", "1", "--upscale", "1", "--out", str(tmp_path / "clip.gif")]) == 0
    assert Image.open(tmp_path / "clip.gif").n_frames == 5 and seen


def test_a_method_without_weights_for_the_task_is_named(builtin_video, capsys):
    assert main(["evaluate", "--task", "t2v", "--method", "global-posemb"]) == 2
    err = capsys.readouterr().err
    assert "global-posemb" in err and "global, metacanvas, metacanvas-k1" in err
    assert main(["evaluate", "--task", "t2i", "--method", "metacanvas-k1"]) == 2
    assert "--task t2i: --method metacanvas-k1 has no built-in weights" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_true_clips_through_the_benchmark_plumbing_score_full_marks(task):
    """True clips laid out as the VAE takes them, then as decoding returns them (frames one after another), score
    1.0 with no flicker; for image-to-video their first frame is the given image exactly."""
    bench = tasks.task(task).benchmark
    scenes = bench.scenes(4, "heldout")
    truth = bench.truth(scenes, np.random.default_rng(0))
    assert truth.shape == (4, 3, 17, 32, 32) and truth.min() >= -1 and truth.max() <= 1
    frames = torch.from_numpy((truth + 1) / 2).movedim(1, -1).reshape(-1, 32, 32, 3)  # latents_to_images' layout
    r = bench.score(scenes, [bench.outputs(frames)] * 2)
    assert r["scores"]["overall"] == 1.0 and r["scores"]["flicker"] == 0.0 and len(r["per_seed"]) == 2
    assert r.get("first_frame_psnr", 100.0) == 100.0

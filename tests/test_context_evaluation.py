"""`evaluate --task video-edit|in-context` (Benchmark definitions beside t2v/i2v, the one `evaluate`), on an untrained
widened Wan folder and untrained weights placed where the built-in video-context weights will ship (mechanics), and
the benchmark's scoring on true and wrong clips (the scorer can fail)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metacanvas_core import benchmarks
from metacanvas_core.__main__ import main
from metacanvas_core.checkpoints import save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.tasks import task
from metacanvas_core.world.clip_edits import clip_edit_benchmark, reference_benchmark
from metacanvas_core.world.tiny_models import PLANNER_HIDDEN

EDIT_SCORES = {"overall", "edit_correct", "preservation"}
MOTION = {"motion_direction", "start_cell", "end_cell", "colour_constant", "shape_constant"}


def _calls(monkeypatch) -> list[dict]:
    seen, real = [], MetaCanvasPipeline.__call__
    monkeypatch.setattr(MetaCanvasPipeline, "__call__",
                        lambda self, prompt, **kw: seen.append({"prompt": prompt, **kw}) or real(self, prompt, **kw))
    return seen


def test_video_edit_benchmark_same_edits_and_seeds_for_every_method_then_table(
    builtin_context, tmp_path, monkeypatch, capsys
):
    seen = _calls(monkeypatch)
    for method in ("metacanvas", "global"):
        out = tmp_path / f"{method}.json"
        assert main(["evaluate", "--task", "video-edit", "--method", method, "--n", "2", "--steps", "1",
                     "--json", str(out)]) == 0
        r = json.loads(out.read_text())
        assert r["task"] == "video-edit" and r["method"] == method and set(r["scores"]) == EDIT_SCORES
        assert all(0 <= v <= 1 for v in r["scores"].values())
        edits = clip_edit_benchmark(2)
        assert set(r["per_kind"]) == {e.kind for e in edits} and all(e.held_out for e in edits)
    assert [c["prompt"] for c in seen] == [[e.instruction] for e in edits] * 2
    assert [c["seed"] for c in seen] == [[0], [1]] * 2
    assert all(c["task"] == "video-edit" and c["given"].shape == (17, 32, 32, 3) for c in seen)
    capsys.readouterr()
    assert main(["table", str(tmp_path / "metacanvas.json"), str(tmp_path / "global.json")]) == 0
    table = capsys.readouterr().out
    assert "| method | edit correct | preservation | overall | recolour |" in table
    assert table.count("| metacanvas |") == 1 and table.count("| global |") == 1


def test_in_context_benchmark_scores_fidelity_and_motion(builtin_context, tmp_path, monkeypatch, capsys):
    seen = _calls(monkeypatch)
    out = tmp_path / "ic.json"
    assert main(["evaluate", "--task", "in-context", "--n", "2", "--steps", "1", "--seeds", "0", "1",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert {"overall", "reference_fidelity", *MOTION} <= set(r["scores"]) and len(r["per_seed"]) == 2
    refs = reference_benchmark(2)
    assert [c["prompt"] for c in seen] == [[x.prompt] for x in refs] * 2
    assert [c["seed"] for c in seen] == [[0], [1], [1_000_003], [1_000_004]]
    assert [len(c["given"]) for c in seen[:2]] == [1, 2]  # one and two references in turn
    capsys.readouterr()
    assert main(["table", str(out)]) == 0
    assert "| method | reference fidelity | motion direction |" in capsys.readouterr().out


def test_weights_for_another_task_are_refused(builtin_context, tmp_path, capsys):
    from metacanvas_core.backbones import load_backbone

    wide = builtin_context / "wan_video_context"
    bb = load_backbone(wide)
    cfg = ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8])
    save_connector(tmp_path / "t2v.safetensors", MetaCanvasConnector(cfg), bb, recipe={"task": "t2v"})
    assert main(["evaluate", "--task", "video-edit", "--backbone", str(wide), "--weights",
                 str(tmp_path / "t2v.safetensors"), "--n", "1", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "the MetaCanvas weights 't2v' were trained for task 't2v', not 'video-edit'" in err
    assert "or use them for text-to-video (--task t2v)" in err


def test_scoring_true_edits_passes_and_unedited_clips_fail():
    edits = clip_edit_benchmark(5)  # every kind once
    bench = task("video-edit").benchmark
    truth = [(x.transpose(1, 2, 3, 0) + 1) / 2 for x in bench.truth(edits, None)]
    sources = [s.astype(np.float32) / 255 for s in benchmarks.edit_sources(edits)]
    good = bench.score(edits, [truth])
    assert good["scores"]["edit_correct"] == pytest.approx(1.0) and good["scores"]["preservation"] > 0.9
    bad = bench.score(edits, [sources])
    assert bad["scores"]["edit_correct"] < 0.2 and set(bad["per_kind"]) == {e.kind for e in edits}


def test_scoring_reference_clips_checks_the_referenced_objects():
    refs = reference_benchmark(4)
    bench = task("in-context").benchmark
    truth = [(x.transpose(1, 2, 3, 0) + 1) / 2 for x in bench.truth(refs, None)]
    assert bench.score(refs, [truth])["scores"]["reference_fidelity"] == pytest.approx(1.0)
    blank = [np.zeros_like(c) for c in truth]
    assert bench.score(refs, [blank])["scores"]["reference_fidelity"] == 0.0


def test_vae_round_trip_of_the_context_benchmarks(builtin_context, tmp_path):
    out = tmp_path / "vae.json"
    assert main(["evaluate", "--task", "video-edit", "--vae-round-trip", "--n", "1", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["scores"]) == EDIT_SCORES


@pytest.mark.parametrize("task", ["video-edit", "in-context"])
def test_bench_times_plain_and_canvas_on_the_first_benchmark_scene(builtin_context, tmp_path, task):
    out = tmp_path / "bench.json"
    assert main(["bench", "--task", task, "--steps", "1", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == task and (r["width"], r["height"], r["frames"]) == (32, 32, 17)
    assert r["ratio"] > 0 and r["connector_flops_per_step"] > 0

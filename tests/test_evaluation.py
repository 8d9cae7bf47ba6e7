"""The benchmark commands on the shipped tiny models: `evaluate` writes scores and failure reasons, `table`
shows them."""

import json

import pytest

from metacanvas_core import benchmarks
from metacanvas_core.__main__ import main
from metacanvas_core.world.scorer import FAILURES
from metacanvas_core.world.shapes import CATEGORIES


def test_evaluate_then_table(tmp_path, capsys, monkeypatch):
    out = tmp_path / "mc.json"
    main(["evaluate", "--n", "12", "--steps", "2", "--json", str(out)])
    r = json.loads(out.read_text())
    assert set(r["scores"]) == {*CATEGORIES, "overall"} and r["method"] == "metacanvas"
    assert 0.0 <= r["layout_score"] <= 1.0
    for c in CATEGORIES:  # every prompt either passes or fails for exactly one reason
        assert set(r["failures"][c]) == set(FAILURES)
        assert r["scores"][c] + sum(r["failures"][c].values()) == pytest.approx(1.0)
    capsys.readouterr()
    main(["table", str(out)])
    text = capsys.readouterr().out
    assert "| metacanvas | prompt |" in text and "Why images fail" in text
    seen, splits = tmp_path / "seen.json", []
    drawn = benchmarks.benchmark_prompts
    monkeypatch.setattr(benchmarks, "benchmark_prompts", lambda n, split: splits.append(split) or drawn(n, split=split))
    main(["evaluate", "--n", "6", "--steps", "2", "--split", "train", "--json", str(seen)])
    assert json.loads(seen.read_text())["split"] == "train" and splits == ["train"]  # the prompts come from it
    capsys.readouterr()
    main(["table", str(out), str(seen)])
    assert "| metacanvas (training combinations) | prompt |" in capsys.readouterr().out
    guided = tmp_path / "cfg5.json"  # the same result as if sampled at another guidance scale
    guided.write_text(json.dumps({**r, "cfg": 5.0}))
    main(["table", str(out), str(guided)])
    text = capsys.readouterr().out
    assert text.count("| metacanvas (2 steps, CFG 3) | prompt |") == 2  # scores and failures both say which
    assert text.count("| metacanvas (2 steps, CFG 5) | prompt |") == 2
    weak = tmp_path / "strength0.json"  # canvas strength is a sampler setting too: recorded and labelled
    main(["evaluate", "--n", "6", "--steps", "2", "--strength", "0", "--json", str(weak)])
    assert json.loads(weak.read_text())["strength"] == 0.0 and r["strength"] == 1.0
    capsys.readouterr()
    main(["table", str(out), str(weak)])
    assert "| metacanvas (2 steps, CFG 3; strength 0) | prompt |" in capsys.readouterr().out
    older = tmp_path / "older.json"  # written before strength and scheduler were recorded: strength was 1
    older.write_text(json.dumps({k: v for k, v in r.items() if k not in ("strength", "scheduler")}))
    main(["table", str(older), str(weak)])
    text = capsys.readouterr().out
    assert "| metacanvas (2 steps, CFG 3) | prompt |" in text and "(2 steps, CFG 3; strength 0)" in text
    assert r["scheduler"] == "DPMSolverMultistep, shift 3"  # the built-in backbone's own sampler, as released SANA
    solver = tmp_path / "euler.json"  # --sampler reaches the sampling and is recorded
    main(["evaluate", "--n", "6", "--steps", "2", "--sampler", "euler", "--shift", "1", "--json", str(solver)])
    assert json.loads(solver.read_text())["scheduler"] == "FlowMatchEulerDiscrete, shift 1"
    capsys.readouterr()
    main(["table", str(out), str(solver)])
    text = capsys.readouterr().out
    assert "| metacanvas (2 steps, CFG 3; FlowMatchEulerDiscrete, shift 1) | prompt |" in text
    assert "| metacanvas (2 steps, CFG 3; DPMSolverMultistep, shift 3) | prompt |" in text
    assert main(["table", str(tmp_path / "absent.json")]) == 2
    assert "absent.json" in capsys.readouterr().err


def test_vae_round_trip_of_true_renders_scores_near_the_truth(tmp_path, capsys):
    out = tmp_path / "vae.json"
    main(["evaluate", "--vae-round-trip", "--n", "60", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["method"] == "true renders, VAE round trip" and r["text"] == "-"
    assert r["scores"]["overall"] >= 0.9  # the shipped VAE keeps shapes, colours and cells
    assert main(["evaluate", "--vae-round-trip", "--canvas-only", "--n", "6"]) == 2
    assert "drop --canvas-only" in capsys.readouterr().err


def test_bench_times_both_side_by_side_and_counts_the_connector(tmp_path, capsys, monkeypatch):
    from metacanvas_core import sampling_cost

    calls, real_sample = [], sampling_cost.sample
    monkeypatch.setattr(sampling_cost, "sample", lambda *a, **kw: calls.append(a[0]) or real_sample(*a, **kw))
    out = tmp_path / "bench.json"
    main(["bench", "--steps", "2", "--repeats", "2", "--json", str(out)])
    assert len(calls) == 2 * (2 + 1)  # one untimed warm-up pair, then the timed pairs, alternating
    assert calls[0] is not calls[1] and calls[0::2] == [calls[0]] * 3 and calls[1::2] == [calls[1]] * 3
    r = json.loads(out.read_text())
    assert r["steps"] == 2 and r["repeats"] == 2 and r["plain_sampling_s"] > 0 and r["planner_once_s"] > 0
    # The ratio comes from the unrounded medians; the times are written rounded to 1e-4 s and the ratio to 1e-3.
    m, p = r["metacanvas_sampling_s"], r["plain_sampling_s"]
    assert r["ratio"] == pytest.approx(m / p, abs=5e-4 + 5e-5 * (1 + m / p) / p)
    # The per-step connector is the SANA-style fuser block: it costs FLOPs every step, a fraction of the DiT's.
    assert r["connector_flops_per_step"] > 0 and 0 < r["connector_flops_share"] < 1
    assert r["connector_flops_share"] == pytest.approx(r["connector_flops_per_step"] / r["dit_flops_per_step"], abs=1e-4)
    assert 0 < r["connector_params"]["canvas_fuser_per_step"] < r["dit_params"]
    capsys.readouterr()
    assert main(["bench", "--steps", "2", "--repeats", "0"]) == 2  # a clean CLI error, not a traceback
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_scores_over_seeds_are_aggregated_one_way():
    per_seed = [{"a": 0.5, "b": 1.0, "overall": 0.75, "kind": {"x": 0.0}, "only": 1.0},
                {"a": 0.25, "b": 0.5, "overall": 0.375, "kind": {"x": 1.0}}]
    r = benchmarks.aggregate(per_seed, {"a": 4, "b": 2})
    # means of every number, nested alike; a key that one seed lacks is left out
    assert r["scores"] == {"a": 0.375, "b": 0.75, "overall": 0.5625, "kind": {"x": 0.5}} and r["per_seed"] is per_seed
    var_a, var_b = 0.375 * 0.625 / 8, 0.75 * 0.25 / 4  # binomial, over every seed's graded samples
    assert r["stderr"]["a"] == pytest.approx(var_a**0.5) and r["stderr"]["b"] == pytest.approx(var_b**0.5)
    assert r["stderr"]["overall"] == pytest.approx((var_a + var_b) ** 0.5 / 2)  # overall: the mean of a and b
    graded = benchmarks.aggregate(per_seed, {"overall": 3})["stderr"]  # an overall graded itself
    assert graded == {"overall": pytest.approx((0.5625 * 0.4375 / 6) ** 0.5)}
    assert "stderr" not in benchmarks.aggregate(per_seed)

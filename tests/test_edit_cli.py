"""generate / evaluate / bench / table for --task edit on untrained tiny files: the mechanics (same edits and seeds
for every method, scores as fractions per edit kind, bit-identical reruns, clear errors), not the quality."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from metacanvas_core import builtin
from metacanvas_core.__main__ import main
from metacanvas_core.world.edits import EDIT_KINDS, edit_benchmark, render_pair


@pytest.fixture()
def source_png(tmp_path):
    path = tmp_path / "source.png"
    Image.fromarray(render_pair(edit_benchmark(1)[0], 32)[0]).resize((64, 64), Image.NEAREST).save(path)
    return path


@pytest.fixture()
def models(random_planner_dir, random_kontext_dir, random_edit_weights):
    return ["--planner", str(random_planner_dir), "--backbone", str(random_kontext_dir)]


def test_generate_edit_writes_the_edited_image(tmp_path, source_png, models, random_edit_weights, capsys):
    out = tmp_path / "x.png"
    args = ["generate", "--task", "edit", "--image", str(source_png), "--prompt", "make the red circle green",
            "--steps", "2", "--out", str(out), *models, "--weights", str(random_edit_weights["metacanvas"])]
    assert main(args) == 0
    assert Image.open(out).size == (256, 256)  # generated at 32x32, written enlarged: it says both
    assert "(32x32, written at 256x256 (--upscale 8), 2 steps, seed 0)" in capsys.readouterr().out
    assert main(args[:3] + args[5:]) == 2  # no --image
    assert "--task edit needs --image (source image)" in capsys.readouterr().err
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (32, 32)).save(rgba)
    assert main(args[:4] + [str(rgba)] + args[5:]) == 2
    assert "alpha" in capsys.readouterr().err


def test_without_shipped_edit_weights_the_cli_says_so(tmp_path, source_png, monkeypatch, capsys):
    monkeypatch.setattr(builtin, "ASSETS", tmp_path)  # as on an install without the built-in edit weights
    args = ["generate", "--task", "edit", "--image", str(source_png), "--prompt", "remove the red circle",
            "--out", str(tmp_path / "x.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the built-in edit weights are missing" in err and "scripts/train_edit.sh" in err
    assert main(args + ["--method", "global-posemb"]) == 2
    assert "--task edit: --method global-posemb has no built-in weights" in capsys.readouterr().err


def test_evaluate_edit_same_edits_and_seeds_for_every_method_then_table(tmp_path, models, random_edit_weights,
                                                                       capsys, monkeypatch):
    import metacanvas_core.pipeline as pipeline

    seen = []
    original = pipeline.MetaCanvasPipeline.__call__
    monkeypatch.setattr(pipeline.MetaCanvasPipeline, "__call__", lambda self, prompt, **kw: seen.append(
        (list(prompt), kw["seed"], kw["given"].sum().item())) or original(self, prompt, **kw))
    files = {}
    for method in ("metacanvas", "global"):
        files[method] = tmp_path / f"{method}.json"
        assert main(["evaluate", "--task", "edit", "--method", method, "--n", "10", "--steps", "2", *models,
                     "--weights", str(random_edit_weights[method]), "--json", str(files[method])]) == 0
    assert seen[0] == seen[1]  # same instructions, seeds and sources for both methods
    result = json.loads(files["metacanvas"].read_text())
    s = result["scores"]
    assert result["task"] == "edit" and result["method"] == "metacanvas" and result["n"] == 10
    assert set(s["per_kind"]) == set(EDIT_KINDS)
    for v in [s["overall"], s["edit_correct"], s["preservation"], *(x for k in s["per_kind"].values()
                                                                   for x in k.values())]:
        assert 0.0 <= v <= 1.0
    assert seen[0][0] == [e.instruction for e in edit_benchmark(10)]
    # The same run again gives the same scores.
    again = tmp_path / "again.json"
    main(["evaluate", "--task", "edit", "--n", "10", "--steps", "2", *models, "--weights",
          str(random_edit_weights["metacanvas"]), "--json", str(again)])
    assert json.loads(again.read_text())["per_seed"] == result["per_seed"]
    capsys.readouterr()
    assert main(["table", str(files["metacanvas"]), str(files["global"])]) == 0
    table = capsys.readouterr().out
    assert "| method | overall | edit correct | preservation | recolour | move | add | remove | replace |" in table
    assert table.count("| metacanvas (") == 1 and table.count("| global (") == 1
    # Editing is a benchmark like the others: the canvas alone, and the VAE's ceiling, are measured the same way.
    alone, ceiling = tmp_path / "alone.json", tmp_path / "vae.json"
    assert main(["evaluate", "--task", "edit", "--canvas-only", "--n", "5", "--steps", "1", *models, "--weights",
                 str(random_edit_weights["metacanvas"]), "--json", str(alone)]) == 0
    assert json.loads(alone.read_text())["canvas_only"] and seen[-1][0] == seen[0][0][:5]
    assert main(["evaluate", "--task", "edit", "--vae-round-trip", "--n", "5", *models, "--weights",
                 str(random_edit_weights["metacanvas"]), "--json", str(ceiling)]) == 0
    assert json.loads(ceiling.read_text())["method"] == "true renders, VAE round trip"


def test_bench_edit_times_plain_kontext_and_metacanvas_side_by_side(tmp_path, models, random_edit_weights,
                                                                   source_png, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--task", "edit", "--steps", "2", "--repeats", "1", *models, "--weights",
                 str(random_edit_weights["metacanvas"]), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == "edit" and r["plain_sampling_s"] > 0 and r["metacanvas_sampling_s"] > 0
    assert r["connector_flops_per_step"] > 0
    assert main(["bench", "--task", "edit", "--image", str(source_png), "--steps", "1", "--repeats", "1", *models,
                 "--weights", str(random_edit_weights["metacanvas"])]) == 0
    capsys.readouterr()
    main(["table", str(out)])
    assert "sampling time MetaCanvas / plain backbone (image editing): " in capsys.readouterr().out
    assert main(["bench", "--image", str(source_png)]) == 2

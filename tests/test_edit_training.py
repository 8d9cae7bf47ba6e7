"""Training for editing, a few steps at a time on untrained tiny files: the Kontext VAE (shift and scale measured),
the global stage (a Kontext folder), then MetaCanvas and global-continue from it; the exported weights say they
are edit weights and load into the edit pipeline, the node pack and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from metacanvas_core.__main__ import main as cli
from metacanvas_core.backbones import load_backbone
from metacanvas_core.builtin import PLANNER
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.training.tasks.base import sample_rng
from metacanvas_core.training.tasks.edit import ImageEditing


def train(*args) -> int:
    return cli(["train", *map(str, args)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    r = tmp_path_factory.mktemp("edit_runs")
    fast = ["--steps", "2", "--batch", "2", "--log-every", "1", "--seed", "0"]
    assert train("vae-kontext", "--out", r / "vae", *fast) == 0
    assert train("edit", "--stage", "global", "--planner", PLANNER, "--vae", r / "vae" / "vae", "--out", r / "global",
                 "--double-layers", "1", "--single-layers", "1", *fast) == 0
    base = ["--planner", PLANNER, "--base", r / "global" / "backbone", "--base-connector",
            r / "global" / "global_base_edit.safetensors"]
    assert train("edit", "--stage", "metacanvas", *base, "--out", r / "mc", "--canvas-lr-scale", "4", *fast) == 0
    assert train("edit", "--stage", "global-continue", *base, "--out", r / "gc", *fast) == 0
    return r


def test_the_kontext_vae_measures_its_shift_and_scale(runs):
    cfg = json.loads((runs / "vae" / "vae" / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKL" and cfg["latent_channels"] == 16
    assert cfg["shift_factor"] != 0.0 and cfg["scaling_factor"] != 1.0  # measured, not the defaults
    bb = load_backbone(runs / "global" / "backbone")
    assert bb.vae.config.shift_factor == cfg["shift_factor"]


def test_stages_export_edit_weights_that_load_and_edit(runs, tmp_path):
    mc = load_connector(runs / "mc" / "metacanvas_edit.safetensors")
    gc = load_connector(runs / "gc" / "global_edit.safetensors")
    assert (mc.method, gc.method) == ("metacanvas", "global")
    assert mc.recipe["task"] == gc.recipe["task"] == "edit" and mc.recipe["stage"] == "metacanvas"
    base = load_backbone(runs / "global" / "backbone").transformer
    assert mc.dit.kind == "transformer" and mc.dit_module(base).state_dict().keys() == base.state_dict().keys()
    pipe = MetaCanvasPipeline.from_pretrained(PLANNER, runs / "global" / "backbone",
                                              runs / "mc" / "metacanvas_edit.safetensors")
    source = torch.rand(1, 32, 32, 3)
    out = pipe("make the red circle green", task="edit", given=source, steps=2)
    assert out.images.shape == (1, 32, 32, 3) and torch.isfinite(out.images).all()
    with pytest.raises(MetaCanvasError, match="image editing needs a source image"):  # the weights say edit
        pipe("make the red circle green", steps=1)
    png, src = tmp_path / "x.png", tmp_path / "src.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(src)
    assert cli(["generate", "--task", "edit", "--image", str(src), "--prompt", "remove the red circle", "--steps", "2",
                "--backbone", str(runs / "global" / "backbone"), "--weights",
                str(runs / "gc" / "global_edit.safetensors"), "--out", str(png)]) == 0


def test_samples_are_grounded_and_dropout_hides_instruction_and_source_together(runs):
    from metacanvas_core.training.cli import train_parser

    args = train_parser("edit").parse_args(["--stage", "metacanvas", "--planner", str(PLANNER), "--base",
                                            str(runs / "global" / "backbone"), "--out", str(runs / "x")])
    task = ImageEditing(args, torch.device("cpu"), torch.float32)
    seen = [task.sample(sample_rng(0, 0, i), 0, i).data for i in range(60)]
    again = task.sample(sample_rng(0, 0, 7), 0, 7).data
    assert again["canvas_prompt"] == seen[7]["canvas_prompt"]
    assert np.array_equal(again["ex"].extra["source"], seen[7]["ex"].extra["source"])
    dropped = [d for d in seen if not d["canvas_prompt"]]
    kept = [d for d in seen if d["canvas_prompt"]]
    assert dropped and kept
    assert any(d["canvas_prompt"] and not d["text_prompt"] for d in seen)  # text-only dropout keeps the canvas
    batch = task.batch([task.sample(sample_rng(0, 0, i), 0, i) for i in range(3)])
    assert batch["reference"].shape == batch["z"].shape == (3, 16, 16, 16)
    # The planner sees the source exactly where the prompt was kept (a dropped caption hides the source too).
    for d, v in zip(seen, task._seen(seen, "canvas_prompt")):
        assert len(v) == (1 if d["canvas_prompt"] else 0)
        assert not v or np.array_equal(v[0], d["ex"].extra["source"])
    loss = task.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and task.conn.canvas_tokens.grad is not None  # the canvas is trained through


def test_editing_refuses_a_backbone_without_a_reference(tmp_path, capsys):
    from metacanvas_core.builtin import SANA_T2I

    assert train("edit", "--stage", "global-continue", "--planner", PLANNER, "--base", SANA_T2I, "--out", tmp_path,
                 "--steps", "1") == 2
    assert "trains on FLUX.1-Kontext" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train("edit", "--stage", "global", "--planner", PLANNER, "--out", tmp_path)  # no --vae, no --base
    assert "give --vae" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train("edit", "--stage", "global", "--planner", PLANNER, "--out", tmp_path, "--vae", tmp_path,
              "--base", SANA_T2I)
    assert "not both" in capsys.readouterr().err


def test_stage_global_pretrains_a_base_further(runs, tmp_path):
    """Pretraining spread over sessions: stage global from --base starts from that DiT and text connector (at LR 0
    they come out unchanged) and exports a base the later stages take."""
    base = runs / "global"
    assert train("edit", "--stage", "global", "--planner", PLANNER, "--base", base / "backbone", "--base-connector",
                 base / "global_base_edit.safetensors", "--out", tmp_path, "--steps", "1", "--batch", "2",
                 "--lr", "0", "--seed", "0") == 0
    before, after = (load_backbone(p).transformer.state_dict() for p in (base / "backbone", tmp_path / "backbone"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    old, new = (load_connector(p).connector.text_connector.state_dict()
                for p in (base / "global_base_edit.safetensors", tmp_path / "global_base_edit.safetensors"))
    assert all(torch.equal(old[k], new[k]) for k in old)

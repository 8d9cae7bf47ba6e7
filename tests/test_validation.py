"""A run people can watch: --validation-prompt samples the current weights through the task's own sampling every
--validation-every steps (saved under the run, logged to the tracker), and --dataloader-workers read the data ahead
without changing what is drawn."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metacanvas_core.__main__ import main as cli
from metacanvas_core.builtin import ASSETS, PLANNER, SANA_T2I
from metacanvas_core.pixels import load_clip
from metacanvas_core.training import trainer

WAN = ASSETS / "wan_t2v"
FAST = ["--steps", "2", "--batch", "2", "--warmup", "1", "--planner", str(PLANNER), "--validation-steps", "3"]


def train(*args) -> int:
    return cli(["train", *map(str, args)])


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_t2i_validation_is_what_the_exported_weights_sample(tmp_path, monkeypatch):
    from metacanvas_core.pipeline import MetaCanvasPipeline

    logged = []

    class Tracker:  # what accelerate's tensorboard / wandb trackers get
        name = "fake"

        def log_images(self, values, step, **kwargs):
            logged.append((step, {k: v.shape for k, v in values.items()}))

        def finish(self):
            pass

    real = trainer.Trainer.__init__

    def init(self, *a, **k):
        real(self, *a, **k)
        self.acc.trackers.append(Tracker())

    monkeypatch.setattr(trainer.Trainer, "__init__", init)
    prompts = ["a red circle at top left", "a blue square at bottom right"]
    out = tmp_path / "run"
    assert train("t2i", "--stage", "metacanvas", "--base", SANA_T2I, "--out", out, *FAST, "--steps", "3",
                 "--validation-every", "2", "--dit-lora-rank", "2", *[x for p in prompts for x in
                                                                      ("--validation-prompt", p)]) == 0
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step_2", "step_3"]  # every 2 and the end
    assert sorted(p.name for p in (out / "validation" / "step_3").iterdir()) == ["00.png", "01.png"]
    assert [s for s, _ in logged] == [2, 3] and logged[0][1] == {"validation/0": (1, 32, 32, 3),
                                                                 "validation/1": (1, 32, 32, 3)}
    # The last validation is the exported weights (connector + unmerged DiT LoRA) sampled the usual way.
    pipe = MetaCanvasPipeline.from_pretrained(PLANNER, SANA_T2I, out / "metacanvas_t2i.safetensors")
    images = pipe(prompts, steps=3, cfg=3.0, seed=0).images
    want = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for i in range(2):
        got = png(out / "validation" / "step_3" / f"{i:02d}.png").astype(int)
        assert np.abs(got - want[i]).max() <= 1
    assert not np.array_equal(png(out / "validation" / "step_2" / "00.png"), png(out / "validation" / "step_3" /
                                                                                  "00.png"))


def test_every_generation_task_validates_by_its_own_sampling(tmp_path):
    """Edit: an edit of the data's first source image; video: a clip (frame strip + gif); video-context: an edit of
    the first source clip."""
    v = ["--validation-prompt", "make the red circle green"]
    assert train("edit", "--stage", "global-continue", "--base", ASSETS / "flux_edit", "--out", tmp_path / "e",
                 *FAST, "--steps", "1", *v) == 0
    edit = png(tmp_path / "e" / "validation" / "step_1" / "00.png")
    assert edit.shape == (32, 32, 3)
    assert train("video", "--stage", "metacanvas", "--base", WAN, "--base-connector",
                 ASSETS / "global_t2v.safetensors", "--out", tmp_path / "v", *FAST, "--steps", "1",
                 "--validation-prompt", "a red circle moves from left to right") == 0
    strip = png(tmp_path / "v" / "validation" / "step_1" / "00.png")
    gif = load_clip(tmp_path / "v" / "validation" / "step_1" / "00.gif")[0]
    assert strip.shape == (32, 17 * 32, 3) and gif.shape == (17, 32, 32, 3)
    assert train("video-context", "--stage", "metacanvas", "--base", WAN,
                 "--base-connector", ASSETS / "global_t2v.safetensors", "--in-context-share", "0",
                 "--out", tmp_path / "c", *FAST, "--steps", "1", *v) == 0
    assert png(tmp_path / "c" / "validation" / "step_1" / "00.png").shape == (32, 17 * 32, 3)


def test_validation_flags_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train("vae", "--out", tmp_path / "x", "--steps", "1", "--validation-prompt", "a red circle")
    assert "train vae has no sampling" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train("t2i", "--stage", "metacanvas", "--base", SANA_T2I, "--out", tmp_path / "x", *FAST,
              "--validation-prompt", " ")
    assert "--validation-prompt is empty" in capsys.readouterr().err


def test_dataloader_workers_draw_the_same_samples(tmp_path, capsys):
    """Two workers read a folder with broken files ahead: the same losses and the same skipped count as drawing in
    the training process, and a resume continues the workers' stream at its step."""
    from test_training import _folder_with_broken_samples

    _folder_with_broken_samples(tmp_path / "data")
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        assert train("t2i", "--stage", "metacanvas", "--base", SANA_T2I, "--data", tmp_path / "data", "--out", out,
                     *FAST, "--steps", "3", "--batch", "4", "--log-every", "1", "--grad-accum", "2",
                     "--dataloader-workers", workers) == 0
        runs[workers] = log(out)
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[2]]
    assert runs[0][-1]["skipped"] == runs[2][-1]["skipped"] > 0
    out = tmp_path / "resumed"
    base = ["t2i", "--stage", "metacanvas", "--base", SANA_T2I, "--data", tmp_path / "data", "--out", out, *FAST,
            "--batch", "4", "--log-every", "1", "--grad-accum", "2", "--dataloader-workers", "2", "--save-every", "1"]
    assert train(*base, "--steps", "2") == 0
    assert train(*base, "--steps", "3", "--resume") == 0
    assert [r["loss"] for r in log(out)] == [r["loss"] for r in runs[0]]

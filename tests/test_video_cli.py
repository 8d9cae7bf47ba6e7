"""`generate --task t2v|i2v` writes a GIF or a folder of PNG frames; bad video input is an error, not a traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metacanvas_core.__main__ import main
from metacanvas_core.backbones import load_backbone
from metacanvas_core.checkpoints import save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.world.tiny_models import PLANNER_HIDDEN
from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder


@pytest.fixture(scope="module")
def wan_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_cli")
    torch.manual_seed(4)
    save_wan_pipeline_folder(root / "wan", new_wan_dit(layers=2), new_wan_vae(base_dim=8), new_wan_scheduler())
    bb = load_backbone(root / "wan")
    conn = MetaCanvasConnector(ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8]))
    save_connector(root / "wan_mc.safetensors", conn, bb)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(root / "start.png")
    return root


def _args(root, *extra):
    return ["generate", "--backbone", str(root / "wan"), "--weights", str(root / "wan_mc.safetensors"),
            "--prompt", "a red circle at top left", "--frames", "9", "--steps", "2", "--upscale", "1", *extra]


def test_text_to_video_gif_and_image_to_video_frames(wan_files, tmp_path):
    assert main(_args(wan_files, "--task", "t2v", "--out", str(tmp_path / "clip.gif"))) == 0
    gif = Image.open(tmp_path / "clip.gif")
    assert gif.n_frames == 9 and gif.size == (32, 32)  # the clip world's size by default
    out = tmp_path / "frames"
    args = _args(wan_files, "--task", "i2v", "--image", str(wan_files / "start.png"), "--out", str(out))
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:04d}.png" for i in range(9)]


@pytest.mark.parametrize("extra, message", [
    (("--task", "t2v", "--frames", "8"), "use 5 or 9"),
    (("--task", "i2v"), "--image"),
    (("--task", "t2v", "--image", "x.png"), "--image"),
    (("--task", "t2v", "--width", "30"), "multiples of 4"),
])
def test_bad_video_arguments_are_errors(wan_files, tmp_path, capsys, extra, message):
    assert main([*_args(wan_files, "--out", str(tmp_path / "x.gif")), *extra]) == 2
    assert message in capsys.readouterr().err


def test_alpha_start_image_and_missing_weights(wan_files, tmp_path, capsys, monkeypatch):
    from metacanvas_core import builtin

    Image.new("RGBA", (64, 64), (255, 0, 0, 128)).save(tmp_path / "alpha.png")
    args = _args(wan_files, "--task", "i2v", "--image", str(tmp_path / "alpha.png"), "--out", str(tmp_path / "x.gif"))
    assert main(args) == 2
    assert "alpha channel" in capsys.readouterr().err
    monkeypatch.setattr(builtin, "ASSETS", tmp_path / "no-assets")  # an install without the video weights
    assert main(["generate", "--task", "t2v", "--prompt", "a red circle", "--out", str(tmp_path / "y.gif")]) == 2
    assert "the built-in video weights are missing" in capsys.readouterr().err

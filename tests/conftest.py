"""Shared fixtures: tiny *untrained* models of the real classes, written in the real folder layouts."""

from __future__ import annotations

import pytest
import torch

from metacanvas_core.world.tiny_models import (
    new_dit, new_planner, new_scheduler, new_vae, save_planner_folder, save_sana_pipeline_folder,
)

# Tiny models: one intra-op thread is as fast as two and never oversubscribes a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def random_planner_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planner")
    model, tok = new_planner(seed=1)
    save_planner_folder(folder, model, tok)
    return folder


@pytest.fixture(scope="session")
def random_sana_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sana")
    torch.manual_seed(1)
    save_sana_pipeline_folder(folder, new_dit(), new_vae(), new_scheduler())
    return folder


@pytest.fixture(scope="session")
def video_asset_dir(tmp_path_factory):
    """A built-in asset folder as it will be once video weights ship: the shipped files (linked) plus an
    *untrained* tiny Wan folder and untrained video weights under their built-in names (k=3, k=1 and global)."""
    from metacanvas_core import builtin
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.checkpoints import save_connector
    from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
    from metacanvas_core.world.tiny_models import PLANNER_HIDDEN
    from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder

    root = tmp_path_factory.mktemp("assets")
    for p in builtin.ASSETS.iterdir():
        (root / p.name).symlink_to(p)
    torch.manual_seed(5)
    save_wan_pipeline_folder(root / builtin.WAN_T2V, new_wan_dit(layers=2), new_wan_vae(base_dim=8),
                             new_wan_scheduler())
    bb = load_backbone(root / builtin.WAN_T2V)
    for method, grid, canvas in (("metacanvas", [3, 8, 8], True), ("metacanvas-k1", [1, 8, 8], True),
                                 ("global", [3, 8, 8], False)):
        cfg = ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, grid, use_canvas=canvas)
        save_connector(root / f"{builtin.VIDEO_WEIGHTS[method]}.safetensors", MetaCanvasConnector(cfg), bb)
    return root


@pytest.fixture
def builtin_video(video_asset_dir, monkeypatch):
    """The built-in assets point at `video_asset_dir` for one test."""
    from metacanvas_core import builtin

    monkeypatch.setattr(builtin, "ASSETS", video_asset_dir)
    return video_asset_dir

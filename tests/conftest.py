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
def random_kontext_dir(tmp_path_factory):
    """An untrained tiny FLUX.1-Kontext folder (the released layout)."""
    from metacanvas_core.world.tiny_flux import new_flux_dit, new_flux_scheduler, new_flux_vae, save_flux_kontext_folder

    folder = tmp_path_factory.mktemp("kontext")
    torch.manual_seed(3)
    save_flux_kontext_folder(folder, new_flux_dit(), new_flux_vae(), new_flux_scheduler())
    return folder


def make_edit_weights(path, backbone_dir, planner_hidden: int = 128, use_canvas: bool = True, task: str = "edit"):
    """Untrained MetaCanvas weights for a Kontext folder, their recipe naming `task` (as training/tasks/edit.py
    writes it), with a non-zero canvas fuser so the canvas visibly acts."""
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.checkpoints import save_connector
    from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector

    bb = load_backbone(backbone_dir)
    torch.manual_seed(4)
    conn = MetaCanvasConnector(ConnectorConfig(planner_hidden, bb.dit_dim, bb.caption_channels,
                                               canvas_grid=[1, *bb.token_grid(32, 32)[1:]], use_canvas=use_canvas))
    if use_canvas:
        for proj in (conn.canvas_encoder.proj, conn.canvas_fuser.proj):
            torch.nn.init.normal_(proj.weight, std=0.1)
    save_connector(path, conn, bb, recipe={"task": task, "stage": "metacanvas" if use_canvas else "global-continue"})
    return path


@pytest.fixture(scope="session")
def random_edit_weights(tmp_path_factory, random_kontext_dir):
    folder = tmp_path_factory.mktemp("edit_weights")
    return {m: make_edit_weights(folder / f"{m}_edit.safetensors", random_kontext_dir, use_canvas=m == "metacanvas")
            for m in ("metacanvas", "global")}


@pytest.fixture(scope="session")
def wan_pair(tmp_path_factory):
    """A tiny text-to-video Wan backbone and the same widened for context (4 mask channels), loaded from folders."""
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.backbones.wan import widened_for_context
    from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder

    torch.manual_seed(2)
    dit, vae, sched = new_wan_dit(layers=2), new_wan_vae(base_dim=8), new_wan_scheduler()
    t2v_dir, wide_dir = tmp_path_factory.mktemp("t2v"), tmp_path_factory.mktemp("wide")
    save_wan_pipeline_folder(t2v_dir, dit, vae, sched)
    save_wan_pipeline_folder(wide_dir, widened_for_context(dit), vae, sched)
    return load_backbone(t2v_dir), load_backbone(wide_dir)


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
    own = {builtin.WAN_T2V, *(f"{stem}.safetensors" for stem in builtin.VIDEO_WEIGHTS.values())}
    for p in builtin.ASSETS.iterdir():
        if p.name not in own:  # never write the untrained files through a link into the shipped ones
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


@pytest.fixture(scope="session")
def context_asset_dir(tmp_path_factory, video_asset_dir):
    """`video_asset_dir` plus what `scripts/train_video_context.sh` will ship, *untrained*: the widened Wan folder
    and video-context weights (serving video-edit and in-context, at most 2 references) for MetaCanvas and global."""
    from metacanvas_core import builtin
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.backbones.wan import widened_for_context
    from metacanvas_core.checkpoints import save_connector
    from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
    from metacanvas_core.world.tiny_models import PLANNER_HIDDEN
    from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder

    root = tmp_path_factory.mktemp("context_assets")
    own = {builtin.WAN_VIDEO_CONTEXT, *(f"{stem}.safetensors" for stem in builtin.CONTEXT_WEIGHTS.values())}
    for p in video_asset_dir.iterdir():
        if p.name not in own:  # never write the untrained files through a link into the shipped ones
            (root / p.name).symlink_to(p)
    torch.manual_seed(6)
    dit = widened_for_context(new_wan_dit(layers=2))
    with torch.no_grad():  # as after training: the conditioning channels matter
        dit.patch_embedding.weight[:, dit.config.out_channels:].normal_(std=0.1)
    save_wan_pipeline_folder(root / builtin.WAN_VIDEO_CONTEXT, dit, new_wan_vae(base_dim=8), new_wan_scheduler())
    bb = load_backbone(root / builtin.WAN_VIDEO_CONTEXT)
    recipe = {"task": "video-context", "serves": ["video-edit", "in-context"], "max_references": 2}
    for method, canvas in (("metacanvas", True), ("global", False)):
        cfg = ConnectorConfig(PLANNER_HIDDEN, bb.dit_dim, bb.caption_channels, [3, 8, 8], use_canvas=canvas)
        save_connector(root / f"{builtin.CONTEXT_WEIGHTS[method]}.safetensors", MetaCanvasConnector(cfg), bb,
                       recipe=recipe)
    return root


@pytest.fixture
def builtin_context(context_asset_dir, monkeypatch):
    """The built-in assets point at `context_asset_dir` (video + video-context weights) for one test."""
    from metacanvas_core import builtin

    monkeypatch.setattr(builtin, "ASSETS", context_asset_dir)
    return context_asset_dir

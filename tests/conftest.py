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

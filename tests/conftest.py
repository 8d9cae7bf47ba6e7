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

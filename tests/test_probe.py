"""The plan probe: it finds a layout where there is one and none where there is none."""

import numpy as np
import pytest
import torch

from metacanvas_core.builtin import PLANNER, T2I_METHODS
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.planner import Planner
from metacanvas_core.probe import LABELS, cell_labels, fit_cell_probe, probe_plan
from metacanvas_core.world.shapes import sample_scene


def _scenes(n, split, seed):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, "position", split) for _ in range(n)]


def test_probe_reads_a_true_layout_and_not_noise():
    torch.manual_seed(0)
    train, test = _scenes(300, "train", 0), _scenes(100, "heldout", 1)
    ytr, yte = cell_labels(train), cell_labels(test)
    one_hot = lambda y: torch.nn.functional.one_hot(y, len(LABELS)).float() + 0.01 * torch.randn(*y.shape, len(LABELS))  # noqa: E731
    exact = fit_cell_probe(one_hot(ytr), ytr, one_hot(yte), yte, steps=200)
    assert exact["occupied_accuracy"] > 0.95
    noise = fit_cell_probe(torch.randn(300, 9, 16), ytr, torch.randn(100, 9, 16), yte, steps=200)
    assert noise["occupied_accuracy"] < 0.15


def test_probe_runs_on_the_shipped_plan_and_refuses_a_global_connector():
    planner = Planner.from_pretrained(PLANNER)
    result = probe_plan(planner, load_connector(T2I_METHODS["metacanvas"][1]), n_train=200, n_test=50)
    assert 0 <= result["canvas"]["occupied_accuracy"] <= 1 and result["text"]["majority"] > 0.5
    with pytest.raises(MetaCanvasError, match="no canvas to probe"):
        probe_plan(planner, load_connector(T2I_METHODS["global"][1]))

"""The plan probe: it finds a layout where there is one and none where there is none."""

import numpy as np
import pytest
import torch

from metacanvas_core.builtin import PLANNER, T2I_MODELS
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.planner import Planner
from metacanvas_core.canvas_probe import (LABELS, SHAPE_LABELS, cell_labels, fit_cell_probe, probe_plan,
                                         prompt_dependence)
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
    # The shape probe reads shapes: features that one-hot the colour do not tell the shape, ones of the shape do.
    # Scored on seen scenes: held-out triples leave some (shape, cell) pairs, e.g. squares at bottom left, untrained.
    seen = _scenes(100, "train", 1)
    str_, ste = cell_labels(train, "shape"), cell_labels(seen, "shape")
    assert int(str_.max()) == len(SHAPE_LABELS) - 1

    def shape_hot(y):
        return torch.nn.functional.one_hot(y, len(SHAPE_LABELS)) + 0.01 * torch.randn(*y.shape, len(SHAPE_LABELS))

    assert fit_cell_probe(shape_hot(str_), str_, shape_hot(ste), ste, steps=200)["occupied_accuracy"] > 0.95
    assert fit_cell_probe(one_hot(ytr), str_, one_hot(cell_labels(seen)), ste, steps=200)["occupied_accuracy"] < 0.6
    with pytest.raises(ValueError, match="attribute"):
        cell_labels(train, "size")


def test_probe_runs_on_the_shipped_plan_and_refuses_a_global_connector():
    planner = Planner.from_pretrained(PLANNER)
    result = probe_plan(planner, load_connector(T2I_MODELS.shipped()["metacanvas"][1]), n_train=200, n_test=50)
    for attribute in ("colour", "shape"):
        probes = result[attribute]
        assert 0 <= probes["canvas"]["occupied_accuracy"] <= 1 and probes["text"]["majority"] > 0.5
    with pytest.raises(MetaCanvasError, match="no canvas to probe"):
        probe_plan(planner, load_connector(T2I_MODELS.shipped()["global"][1]))


def test_prompt_dependence_tells_a_prompt_blind_canvas():
    """Canvas tokens far larger than any word drown the prompt: their states barely change between prompts that
    move the object, while random tokens of the shipped norm (the reference) do; the shipped SANA plan keeps it."""
    planner = Planner.from_pretrained(PLANNER)
    loaded = load_connector(T2I_MODELS.shipped()["metacanvas"][1])
    shipped = prompt_dependence(planner, loaded)
    assert shipped["position"]["trained"] > 0.3 and shipped["position"]["random_tokens"] > 0.3
    with torch.no_grad():
        loaded.connector.canvas_tokens.mul_(1000.0)
    drowned = prompt_dependence(planner, loaded)
    assert drowned["position"]["trained"] < 0.5 * shipped["position"]["trained"]
    assert drowned["position"]["random_tokens"] < 0.5 * shipped["position"]["random_tokens"]  # the reference: same norm

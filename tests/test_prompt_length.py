"""Prompts longer than the planner's context are refused with both lengths (issue 15, point 5)."""

import pytest
import torch

from metacanvas_core.builtin import PLANNER
from metacanvas_core.canvas_grid import CanvasGrid
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.planner import Planner


@pytest.fixture(scope="module")
def planner():
    return Planner.from_pretrained(PLANNER)


def test_the_limit_is_the_context_minus_the_canvas_positions(planner):
    grid = CanvasGrid(1, 8, 8)
    assert planner.max_positions == 512  # the tiny planner's config
    assert planner.max_prompt_tokens() == 512 and planner.max_prompt_tokens(grid) == 504
    assert planner.max_prompt_tokens(CanvasGrid(3, 11, 20)) == 512 - 20  # M-RoPE: the longest axis


@pytest.mark.parametrize("words", [600, 10_000])
def test_too_long_is_refused_with_both_lengths(planner, words):
    grid = CanvasGrid(1, 8, 8)
    tokens = torch.zeros(grid.num_tokens, planner.hidden_size)
    with pytest.raises(MetaCanvasError, match=rf"prompt is {words + 1} tokens long.*at most 504 \(512 positions "
                                              r"minus 8 for the canvas\): shorten"):
        planner.encode(["red " * words], tokens, grid)
    with pytest.raises(MetaCanvasError, match=rf"prompt is {words + 1} tokens long.*at most 512 \(512 positions\)"):
        planner.encode(["a red circle", "red " * words])  # text only (e.g. the DiT's text prompt): every prompt


def test_exactly_the_limit_plans(planner):
    grid = CanvasGrid(1, 8, 8)
    out = planner.encode(["red " * 503], torch.zeros(grid.num_tokens, planner.hidden_size), grid)
    assert out.text_states.shape[1] == 504 and torch.isfinite(out.canvas_states).all()

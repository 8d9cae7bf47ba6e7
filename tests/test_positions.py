"""M-RoPE positions of canvas tokens, batching, and the frozen planner."""

import torch

from metacanvas_core.canvas_grid import CanvasGrid, canvas_position_ids
from metacanvas_core.planner import Planner


def test_canvas_positions_match_qwen_image_grid(random_planner_dir):
    planner = Planner.from_pretrained(random_planner_dir)
    cfg = planner.model.config
    grid = CanvasGrid(1, 4, 6)
    text = planner.tokenize(["a red circle at top left"])[0]
    merge = cfg.vision_config.spatial_merge_size
    # The equivalent input Qwen2.5-VL knows: the same text, then an image whose merged grid is 4x6, then text.
    n = grid.num_tokens
    ids = torch.tensor([text + [cfg.image_token_id] * n + text])
    types = torch.tensor([[0] * len(text) + [1] * n + [0] * len(text)])
    thw = torch.tensor([[1, grid.height * merge, grid.width * merge]])
    ref, _ = planner.model.model.get_rope_index(ids, types, image_grid_thw=thw)
    ours = canvas_position_ids(len(text), grid)
    assert torch.equal(ref[:, 0, len(text) : len(text) + n], ours)
    # Text after the image continues where Qwen would continue it.
    assert int(ref[0, 0, len(text) + n]) == len(text) + max(grid.height, grid.width)


def test_video_canvas_positions_advance_time():
    pos = canvas_position_ids(5, CanvasGrid(3, 2, 2), time_interval=2)
    assert pos[0].tolist() == [5] * 4 + [7] * 4 + [9] * 4
    assert pos[1].tolist()[:4] == [5, 5, 6, 6] and pos[2].tolist()[:4] == [5, 6, 5, 6]


def test_batched_prompts_plan_like_single_prompts(random_planner_dir):
    planner = Planner.from_pretrained(random_planner_dir)
    grid = CanvasGrid(1, 3, 3)
    tokens = torch.randn(grid.num_tokens, planner.hidden_size) * 0.02
    prompts = ["a red circle", "two blue squares at top left and a green triangle at bottom right"]
    both = planner.encode(prompts, tokens, grid)
    for i, p in enumerate(prompts):
        alone = planner.encode([p], tokens, grid)
        n = alone.text_states.shape[1]
        torch.testing.assert_close(both.canvas_states[i], alone.canvas_states[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both.text_states[i, :n], alone.text_states[0], atol=1e-5, rtol=1e-5)
        assert both.text_mask[i].sum() == n and both.text_states[i, n:].abs().sum() == 0


def test_positions_change_the_plan(random_planner_dir):
    """Explicit 3-D positions reach the model: the same tokens on another grid give other states."""
    planner = Planner.from_pretrained(random_planner_dir)
    tokens = torch.randn(6, planner.hidden_size)
    a = planner.encode(["a circle"], tokens, CanvasGrid(1, 2, 3)).canvas_states
    b = planner.encode(["a circle"], tokens, CanvasGrid(1, 3, 2)).canvas_states
    assert not torch.allclose(a, b)


def test_planner_is_frozen_but_canvas_tokens_learn(random_planner_dir):
    planner = Planner.from_pretrained(random_planner_dir)
    assert not planner.model.training
    assert not any(p.requires_grad for p in planner.model.parameters())
    tokens = torch.nn.Parameter(torch.randn(4, planner.hidden_size) * 0.02)
    out = planner.encode(["a square"], tokens, CanvasGrid(1, 2, 2))
    out.canvas_states.sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in planner.model.parameters())

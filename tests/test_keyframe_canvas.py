"""The sparse 3-D keyframe canvas: numbered as Qwen2.5-VL numbers a video's patches, spacing recorded in the weights."""

import json

import pytest
import torch

from metacanvas_core.canvas_grid import CanvasGrid, canvas_position_ids, keyframe_seconds
from metacanvas_core.checkpoints import load_connector, save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.backbones import load_backbone
from metacanvas_core.planner import Planner


@pytest.mark.parametrize("seconds", [1.0, 2.5, 0.25, 1 / 3])
def test_keyframe_positions_match_qwens_video_grid(random_planner_dir, seconds):
    """k x h x w canvas tokens after text == the patches of a video whose merged grid is k x h x w, with
    second_per_grid_t = the keyframe spacing, by the model's own get_rope_index (fractional intervals truncated
    as Qwen truncates them)."""
    planner = Planner.from_pretrained(random_planner_dir)
    model = planner.model.model
    cfg = planner.model.config
    grid = CanvasGrid(3, 2, 3, keyframe_seconds=seconds)
    text = planner.tokenize(["a red circle moves from left to right"])[0]
    n = grid.num_tokens
    ids = torch.tensor([text + [cfg.video_token_id] * n + text])
    types = torch.tensor([[0] * len(text) + [2] * n + [0] * len(text)])
    thw = torch.tensor([[grid.frames, grid.height * 2, grid.width * 2]])
    ref, _ = model.get_rope_index(ids, types, video_grid_thw=thw, second_per_grid_ts=torch.tensor([seconds]))
    tps = cfg.vision_config.tokens_per_second
    ours = canvas_position_ids(len(text), grid, tps * grid.keyframe_seconds)
    assert torch.equal(ref[:, 0, len(text) : len(text) + n], ours)


def test_one_keyframe_is_the_2d_canvas_whatever_the_spacing():
    flat = canvas_position_ids(7, CanvasGrid(1, 4, 5))
    for seconds in (0.0, 1.0, 2.5):
        assert torch.equal(canvas_position_ids(7, CanvasGrid(1, 4, 5, seconds), 2 * seconds), flat)
    t, h, w = flat
    assert t.unique().tolist() == [7] and h.tolist()[::5] == [7, 8, 9, 10] and w.tolist()[:5] == [7, 8, 9, 10, 11]


def test_keyframe_spacing_is_the_clip_time_between_keyframes():
    assert keyframe_seconds(17, 8, 3) == 1.0  # tiny world: keyframes on latent frames 0, 2, 4 of 5
    assert keyframe_seconds(121, 24, 3) == 2.5  # Wan 2.2 TI2V: 31 latent frames, keyframes on 0, 15, 30
    assert keyframe_seconds(17, 8, 5) == 0.5  # one keyframe per latent frame: 4 video frames apart
    assert keyframe_seconds(17, 8, 1) == 0.0


def test_keyframe_spacing_is_saved_and_old_files_load(tmp_path, random_sana_dir):
    bb = load_backbone(random_sana_dir)
    cfg = ConnectorConfig(128, bb.dit_dim, bb.caption_channels, [3, 2, 2], keyframe_seconds=2.5)
    path = tmp_path / "k3.safetensors"
    save_connector(path, MetaCanvasConnector(cfg), bb)
    loaded = load_connector(path)
    assert loaded.config.grid == CanvasGrid(3, 2, 2, 2.5)
    # A file written before the field existed: its connector_config has no keyframe_seconds.
    old = {k: v for k, v in cfg.to_dict().items() if k != "keyframe_seconds"}
    assert ConnectorConfig(**json.loads(json.dumps(old))).grid == CanvasGrid(3, 2, 2, 1.0)

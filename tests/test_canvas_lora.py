"""The canvas-only planner LoRA: it changes the plan, never the text states, and travels with the checkpoint."""

import pytest
import torch

from metacanvas_core.backbones import load_backbone
from metacanvas_core.canvas_lora import CanvasLoRA, lora_targets
from metacanvas_core.checkpoints import load_connector, save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.plan import make_plan
from metacanvas_core.planner import Planner

PROMPTS = ["a red circle at top left", "two blue squares"]


@pytest.fixture(scope="module")
def planner(random_planner_dir):
    return Planner.from_pretrained(random_planner_dir)


def _connector(planner, bb, rank=4, trained=True):
    torch.manual_seed(5)
    lora = {"rank": rank, "alpha": float(rank), "targets": lora_targets(planner.language_model)}
    conn = MetaCanvasConnector(ConnectorConfig(planner.hidden_size, bb.dit_dim, bb.caption_channels, [1, 4, 4], planner_lora=lora))
    if trained:
        for up in conn.canvas_lora.up.values():
            torch.nn.init.normal_(up.weight, std=0.2)
    return conn


def test_targets_are_every_attention_and_mlp_layer(planner):
    targets = lora_targets(planner.language_model)
    layers = planner.model.config.text_config.num_hidden_layers
    assert len(targets) == 7 * layers
    assert targets["layers.0.self_attn.q_proj"] == [planner.hidden_size, planner.hidden_size]


def test_lora_changes_the_canvas_but_not_the_text(planner, random_sana_dir):
    conn = _connector(planner, load_backbone(random_sana_dir))
    with torch.no_grad():
        plain = planner.encode(PROMPTS, conn.canvas_tokens, conn.config.grid)
        adapted = planner.encode(PROMPTS, conn.canvas_tokens, conn.config.grid, conn.canvas_lora)
    assert torch.equal(plain.text_states, adapted.text_states)
    assert (plain.canvas_states - adapted.canvas_states).abs().max() > 1e-3
    # The hooks live only for that one forward.
    assert all(not m._forward_hooks for m in planner.language_model.modules())


def test_untrained_lora_is_the_identity(planner, random_sana_dir):
    conn = _connector(planner, load_backbone(random_sana_dir), trained=False)
    with torch.no_grad():
        plain = planner.encode(PROMPTS, conn.canvas_tokens, conn.config.grid)
        adapted = planner.encode(PROMPTS, conn.canvas_tokens, conn.config.grid, conn.canvas_lora)
    assert torch.equal(plain.canvas_states, adapted.canvas_states)


def test_gradients_reach_the_lora_only(planner, random_sana_dir):
    conn = _connector(planner, load_backbone(random_sana_dir))
    conn.requires_grad_(True)
    out = planner.encode(PROMPTS, conn.canvas_tokens, conn.config.grid, conn.canvas_lora)
    out.canvas_states.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conn.canvas_lora.down.parameters())
    assert all(p.grad is None for p in planner.model.parameters())


def test_checkpoint_round_trip_plans_the_same(tmp_path, planner, random_sana_dir):
    bb = load_backbone(random_sana_dir)
    conn = _connector(planner, bb).eval()
    path = tmp_path / "lora.safetensors"
    save_connector(path, conn, bb)
    plan = make_plan(planner, load_connector(path), PROMPTS)
    with torch.no_grad():
        direct = conn.canvas_encoder(planner.encode(PROMPTS, conn.canvas_tokens, conn.config.grid, conn.canvas_lora).canvas_states)
    assert torch.equal(plan.canvas, direct)


def test_planner_without_the_adapted_layers_is_named(tmp_path, planner, random_sana_dir):
    bb = load_backbone(random_sana_dir)
    conn = _connector(planner, bb)
    conn.config.planner_lora["targets"]["layers.0.mlp.up_proj"] = [128, 999]
    conn.canvas_lora = CanvasLoRA(**conn.config.planner_lora)
    path = tmp_path / "other.safetensors"
    save_connector(path, conn, bb)
    with pytest.raises(MetaCanvasError, match=r"canvas LoRA was trained.*layers.0.mlp.up_proj.*\[128, 999\]"):
        make_plan(planner, load_connector(path), PROMPTS)

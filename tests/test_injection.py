"""The canvas enters through a hook on the real SanaTransformer2DModel: zero init and strength 0 change nothing."""

import pytest
import torch

from metacanvas_core.backbones import load_backbone
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.injection import CANVAS_HOOK, canvas_injected


@pytest.fixture()
def setup(random_sana_dir):
    bb = load_backbone(random_sana_dir)
    cfg = ConnectorConfig(128, bb.dit_dim, bb.caption_channels, canvas_grid=[1, 8, 8])
    torch.manual_seed(0)
    conn = MetaCanvasConnector(cfg)
    grid = bb.token_grid(32, 32)
    x = torch.randn(2, bb.latent_channels, 8, 8)
    t = torch.tensor([300.0, 700.0])
    text, mask = torch.randn(2, 5, bb.caption_channels), torch.ones(2, 5, dtype=torch.long)
    canvas = conn.canvas_for_grid(conn.canvas_encoder(torch.randn(2, 64, 128)), *grid)
    return bb, conn, grid, (x, t, text, mask), canvas


def test_zero_init_connector_is_bit_identical(setup):
    bb, conn, grid, args, canvas = setup
    with torch.no_grad():
        plain = bb.predict(*args)
        canvas = torch.randn_like(canvas)  # even a non-zero canvas: the fuser's output projection is zero
        with canvas_injected(bb, conn.canvas_fuser, canvas, grid):
            injected = bb.predict(*args)
    assert torch.equal(plain, injected)


def test_strength_zero_is_bit_identical_and_removal_restores(setup):
    bb, conn, grid, args, canvas = setup
    torch.nn.init.normal_(conn.canvas_fuser.proj.weight)
    with torch.no_grad():
        plain = bb.predict(*args)
        with canvas_injected(bb, conn.canvas_fuser, torch.randn_like(canvas), grid, strength=0.0):
            zero = bb.predict(*args)
        with canvas_injected(bb, conn.canvas_fuser, torch.randn_like(canvas), grid, strength=1.0):
            changed = bb.predict(*args)
        after = bb.predict(*args)
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, changed)
    assert torch.equal(plain, after)
    assert bb.patch_embed._diffusers_hook.get_hook(CANVAS_HOOK) is None


def test_gradients_reach_every_canvas_part(setup):
    bb, conn, grid, args, _ = setup
    conn.train()
    states = torch.randn(2, 64, 128)
    # Two zero-initialised projections in series: each needs a step before gradients pass it, as in training.
    for _ in range(3):
        canvas = conn.canvas_for_grid(conn.canvas_encoder(states), *grid)
        with canvas_injected(bb, conn.canvas_fuser, canvas, grid):
            loss = bb.predict(*args).pow(2).mean()
        conn.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in conn.parameters():
                if p.grad is not None:
                    p -= 0.01 * p.grad.sign()
    assert conn.canvas_fuser.proj.weight.grad.abs().sum() > 0
    assert conn.canvas_encoder.proj.weight.grad.abs().sum() > 0
    assert conn.canvas_encoder.block.attn1.to_q.weight.grad.abs().sum() > 0

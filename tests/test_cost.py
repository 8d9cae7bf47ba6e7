"""`cost`: per-GPU memory from exact parameter counts and measured activations, checked against hand computations;
the recommended recipe of each real backbone fits an 80 GB GPU."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from metacanvas_core.__main__ import main as cli
from metacanvas_core.training import cost
from metacanvas_core.training.cost import BY_KEY, Measured, Measures, Recipe, memory

REF = Path(__file__).resolve().parents[2] / "shared" / "reference-configs"
needs_configs = pytest.mark.skipif(not REF.is_dir(), reason=f"reference configs not found at {REF}")


def test_weights_are_not_counted_as_activations():
    """Linear(64->128), GELU, Linear(128->32) on 4 bf16 rows whose input needs a gradient. Frozen: each linear keeps
    only its weight (a weight, not counted), GELU its input: 4 x 128 x 2 B = 1024 B. Trained: the linears also keep
    their inputs, 4 x 64 x 2 + 4 x 128 x 2 B more = 2560 B."""
    with torch.device("meta"):
        mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).to(torch.bfloat16)
        x = torch.empty(4, 64, dtype=torch.bfloat16, requires_grad=True)
    assert cost.measure(mlp.requires_grad_(False), lambda: mlp(x)).saved == 1024
    assert cost.measure(mlp.requires_grad_(True), lambda: mlp(x)).saved == 2560


# Round numbers: a 1 B-parameter DiT (LoRA 10 M), connector 5 M, planner 2 B, VAE 100 M; the DiT keeps 8 GB of
# activations (2 GB checkpointed; largest block 50 M parameters), the planner 4 GB (1 GB), fuser 0.3, connector 0.2.
M = Measures(BY_KEY["sana"], (1, 16, 16), dit_params=10**9, lora_params=10**7, conn_params=5 * 10**6,
             planner_params=2 * 10**9, vae_params=10**8, dit=Measured(1e12, 8e9, 2e9, 5 * 10**7),
             planner=Measured(1e12, 4e9, 1e9), fuser=Measured(1e10, 3e8, 3e8), once=Measured(1e9, 2e8, 2e8))


def test_memory_follows_the_flags_as_computed_by_hand():
    lora = memory(M, Recipe())  # bf16, LoRA, checkpointing, batch 1, one GPU
    assert (lora["planner_weights_GB"], lora["vae_weights_GB"], lora["dit_frozen_weights_GB"]) == (4.0, 0.2, 2.0)
    assert lora["trained_states_GB"] == 0.24  # (10 M + 5 M) x 16 B
    assert lora["activations_GB"] == 3.5 and lora["total_GB"] == 9.9  # 2 + 1 + 0.3 + 0.2
    fp32 = memory(M, Recipe(precision="no", checkpointing=False))  # frozen weights and activations twice as large
    assert (fp32["planner_weights_GB"], fp32["dit_frozen_weights_GB"], fp32["activations_GB"]) == (8.0, 4.0, 25.0)
    assert memory(M, Recipe(checkpointing=False))["activations_GB"] == 12.5  # checkpointing saved 9 GB
    assert memory(M, Recipe(batch=4))["activations_GB"] == 14.0
    full = memory(M, Recipe(dit="full"))  # 1.005 B trained x 16 B, plus autocast's bf16 copy of the DiT
    assert (full["trained_states_GB"], full["dit_frozen_weights_GB"], full["gathered_GB"]) == (16.08, 0.0, 2.0)
    # FSDP / ZeRO-3 over 8 GPUs divide the wrapped DiT and connector, never the planner or the VAE.
    fsdp = memory(M, Recipe(dit="full", gpus=8, sharding="fsdp"))
    assert (fsdp["trained_states_GB"], fsdp["gathered_GB"], fsdp["planner_weights_GB"]) == (2.01, 0.2, 4.0)
    z3 = memory(M, Recipe(gpus=8, sharding="zero3"))
    assert (z3["dit_frozen_weights_GB"], z3["trained_states_GB"], z3["planner_weights_GB"]) == (0.25, 0.03, 4.0)
    z2 = memory(M, Recipe(dit="full", gpus=8, sharding="zero2"))  # weights replicated, grads + moments split
    assert z2["trained_states_GB"] == round((4 + 12 / 8) * 1.005, 2) and z2["gathered_GB"] == 2.0
    assert memory(M, Recipe(gpus=8))["trained_states_GB"] == 0.24  # DDP shards nothing


@needs_configs
def test_the_recommended_recipes_fit_80_gb_and_respond_to_the_flags(capsys):
    rows = {r["backbone"]: r for r in cost.recommended(REF)}
    assert {k: v["dit_params_B"] for k, v in rows.items()} == {
        "SANA 1600M": 1.604, "FLUX.1 Kontext dev": 11.901, "Wan 2.2 TI2V 5B": 5.0}
    for r in rows.values():
        assert r["planner_params_B"] == 8.29 and r["planner_weights_GB"] == 16.58  # 8.29 B frozen in bf16
        assert r["total_GB"] < 72  # 80 GB less ~10 % headroom
        assert "bf16, LoRA r64, gradient checkpointing" in r["recipe"]
    assert rows["Wan 2.2 TI2V 5B"]["canvas_tokens"] == 3 * 11 * 20  # the paper's keyframe canvas
    assert rows["FLUX.1 Kontext dev"]["planner_tokens"] == 128 + 37 * 37 + 32 * 32  # prompt, source image, canvas
    # The flags move the real estimate as they should (SANA: fast to measure).
    sana = cost.measures(REF, "sana")
    base = Recipe(batch=1)
    on, off = memory(sana, base), memory(sana, replace(base, checkpointing=False))
    assert on["activations_GB"] < off["activations_GB"] / 4
    fp32 = memory(sana, replace(base, precision="no"))
    assert fp32["planner_weights_GB"] == round(sana.planner_params * 4 / 1e9, 2)  # bf16 halves the frozen weights
    assert on["planner_weights_GB"] == round(sana.planner_params * 2 / 1e9, 2)
    assert (on["dit_frozen_weights_GB"], fp32["dit_frozen_weights_GB"]) == tuple(
        round(sana.dit_params * b / 1e9, 2) for b in (2, 4))
    assert abs(memory(sana, replace(base, batch=8))["activations_GB"] - 8 * on["activations_GB"]) < 0.05
    assert cli(["cost", "--configs", "/nonexistent"]) == 2
    assert "reference-configs" in capsys.readouterr().err

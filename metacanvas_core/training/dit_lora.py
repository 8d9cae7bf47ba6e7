"""A LoRA on the DiT through peft (diffusers' `add_adapter`), and merging it back into plain DiT weights.

Targets are found by structure, not by architecture name: every linear (and 1x1 convolution, SANA's Mix-FFN
projections) inside a module called `attn*`, `ff*` or a FLUX single block's `proj_mlp`. Exported MetaCanvas
weights keep the LoRA unmerged beside the connector file (`<name>_dit_lora.safetensors`, peft's keys); the merge is
for a backbone folder a run writes (video-context's widened DiT), which holds plain DiT weights.
"""

from __future__ import annotations

import torch
from torch import nn

LORA_KEY = ".lora_A."


def lora_target_names(transformer: nn.Module) -> list[str]:
    names = []
    for name, mod in transformer.named_modules():
        parts = name.split(".")
        in_block = any(p.startswith(("attn", "ff")) for p in parts) or parts[-1] == "proj_mlp"
        conv1x1 = isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1) and mod.groups == 1
        if in_block and (isinstance(mod, nn.Linear) or conv1x1):
            names.append(name)
    return names


def add_dit_lora(transformer, rank: int) -> None:
    """Freeze the DiT and add a rank-`rank` LoRA (alpha = rank, so B A is applied at scale 1)."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    targets = lora_target_names(transformer)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets))


def merge_dit_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A peft-wrapped DiT's state dict -> the plain DiT's, with W + B A in place of each wrapped weight."""
    merged = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    for key in [k for k in state if LORA_KEY in k]:
        prefix, adapter = key.split(LORA_KEY)[0], key.split(LORA_KEY)[1].removesuffix(".weight")
        a, b = state[key].float(), state[f"{prefix}.lora_B.{adapter}.weight"].float()
        delta = b.flatten(1) @ a.flatten(1)
        w = merged[f"{prefix}.weight"]
        merged[f"{prefix}.weight"] = (w.float() + delta.reshape(w.shape)).to(w.dtype)
    return merged

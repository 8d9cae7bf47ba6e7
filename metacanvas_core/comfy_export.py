"""The DiT part of MetaCanvas weights the way ComfyUI loads it natively (no ComfyUI import).

- `lora`: a LoRA file in ComfyUI's generic keys (`diffusion_model.<ComfyUI name>.lora_down/lora_up/alpha`) that
  LoraLoader / LoraLoaderModelOnly apply to ComfyUI's own model, from a peft LoRA DiT part as it is; where ComfyUI
  fuses several diffusers modules into one tensor (FLUX's q, k, v into `img_attn.qkv` / `txt_attn.qkv`, and with
  proj_mlp into a single block's `linear1`), their LoRAs become one block-diagonal LoRA of the summed rank (the
  A's stacked as lora_down, each B in its own rows and columns of lora_up, alpha = that rank: scale 1), which
  gives exactly the sum of the parts' B A in their rows and stays LoRA-sized (a `.diff` would be the whole fused
  weight). From a full
  fine-tune (a DiT folder, or format 1's tensors inside the file) as the difference to the base DiT, in the
  `.diff` / `.diff_b` keys ComfyUI's LoRA loader applies as additive patches (unchanged tensors are left out).
  ComfyUI patches only parameters of leaf modules, so a fine-tune's change to Wan's per-block `modulation` tables
  cannot travel in a LoRA: those are left out and named (`not_in_lora`); `diffusion_models` keeps them.
- `diffusion_models`: the whole fine-tuned DiT (base + LoRA merged, for a LoRA part) in ComfyUI's key names, a file
  for models/diffusion_models that UNETLoader reads for real Wan 2.2 checkpoints (ComfyUI sizes a Wan from its keys
  as width / 128 heads with patch 1x2x2, so the tiny built-in DiT needs Load Native Backbone instead).

The connector file itself holds no DiT tensors (format 2) and stays as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .backbones.native import NativeLayout, layout, swap_halves
from .checkpoints import DIT_PREFIX, MetaCanvasWeights
from .errors import MetaCanvasError

FORMATS = ("lora", "diffusion_models")
PREFIX = "diffusion_model."


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MetaCanvasError(f"{str(folder)!r} holds no .safetensors transformer weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _lora_pairs(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """peft keys `transformer.<module>.lora_A.weight` / `lora_B.weight` -> {module: (A, B)}."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        name = k[len(DIT_PREFIX):] if k.startswith(DIT_PREFIX) else k
        module, _, rest = name.partition(".lora_")
        if rest not in ("A.weight", "B.weight"):
            raise MetaCanvasError(f"the DiT LoRA has a tensor {k!r} that is not a peft lora_A / lora_B weight")
        pairs.setdefault(module, {})[rest[0]] = v
    if any(len(p) != 2 for p in pairs.values()):
        raise MetaCanvasError("the DiT LoRA has a lora_A without its lora_B (or the reverse)")
    return {m: (p["A"], p["B"]) for m, p in pairs.items()}


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _lora_tensors(lay: NativeLayout, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft pairs {diffusers module: (A, B)} as ComfyUI LoRA tensors; the parts of one fused ComfyUI weight become
    one block-diagonal pair: lora_down = [A_1; A_2; ...], lora_up with B_i at the part's rows and A_i's columns."""
    slots = lay.native_slots(_shapes(base))
    fused: dict[str, list[tuple[str, int, int, bool, torch.Tensor, torch.Tensor]]] = {}
    for module, (a, b) in pairs.items():
        key = module + ".weight"
        if key not in slots:
            what = "which ComfyUI's {} model has no place for".format(lay.title) if lay.native_part(key) is None \
                else "which the base transformer lacks: give the base these weights were trained from"
            raise MetaCanvasError(f"the DiT LoRA targets {module!r}, {what}")
        nk, row, rows, swapped = slots[key]
        if b.shape[0] != rows or a.shape[1] != base[key].shape[1]:
            raise MetaCanvasError(f"the DiT LoRA's {module!r} is {tuple(b.shape[:1]) + tuple(a.shape[1:])}, the base "
                                  f"{tuple(base[key].shape)}: give the base these weights were trained from")
        fused.setdefault(nk[: -len(".weight")], []).append((module, row, rows, swapped, a, b))
    tensors = {}
    for name, parts in fused.items():
        total = sum(1 for k in slots.values() if k[0] == name + ".weight")
        out_rows = sum(s[2] for s in slots.values() if s[0] == name + ".weight")
        if total == 1:
            (_, _, _, swapped, down, up), = parts
            up = swap_halves(up) if swapped else up
        else:
            parts.sort(key=lambda p: p[1])
            down = torch.cat([p[4] for p in parts], 0)
            up = torch.zeros(out_rows, down.shape[0], dtype=parts[0][5].dtype)
            col = 0
            for _, row, rows, _, a, b in parts:
                up[row:row + rows, col:col + a.shape[0]] = b.to(up.dtype)
                col += a.shape[0]
        tensors[f"{PREFIX}{name}.lora_down.weight"] = down.contiguous()
        tensors[f"{PREFIX}{name}.lora_up.weight"] = up.contiguous()
        tensors[f"{PREFIX}{name}.alpha"] = torch.tensor(float(down.shape[0]))  # trained at alpha = rank: scale 1
    return tensors


def fine_tuned_state(weights: MetaCanvasWeights, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights' whole fine-tuned DiT in diffusers names."""
    kind = weights.dit.kind
    if kind == "transformer":
        return _read_folder(weights.dit.path)
    if kind == "inline":
        return {**base, **weights.dit_state}
    if kind == "lora":
        out = dict(base)
        for module, (a, b) in _lora_pairs(weights.dit_lora_state()).items():
            key = module + ".weight"
            out[key] = (base[key].float() + b.float() @ a.float()).to(base[key].dtype)
        return out
    raise MetaCanvasError(f"the MetaCanvas weights {weights.name!r} have no DiT part (they leave the DiT as it is): "
                          "nothing to convert; use the base model as it is")


def convert(weights: MetaCanvasWeights, base_transformer: Path, out: Path, fmt: str = "lora") -> dict:
    """Write the weights' DiT part to `out` in ComfyUI's keys; returns what was written (for the command's line)."""
    if fmt not in FORMATS:
        raise MetaCanvasError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    lay = layout(weights.backbone_architecture)
    base = _read_folder(base_transformer)
    config = json.loads((base_transformer / "config.json").read_text())
    meta = {"metacanvas_weights": weights.name, "architecture": lay.architecture, "format": fmt,
            "base_config": json.dumps({k: v for k, v in config.items() if not k.startswith("_")})}
    if fmt == "diffusion_models":
        tensors = lay.native_state_dict(fine_tuned_state(weights, base))
    elif weights.dit.kind == "lora":
        tensors = _lora_tensors(lay, _lora_pairs(weights.dit_lora_state()), base)
    else:
        tuned = fine_tuned_state(weights, base)
        unknown = sorted(set(tuned) - set(base))
        if unknown:
            raise MetaCanvasError(f"the fine-tuned DiT has tensors the base {str(base_transformer)!r} lacks "
                                  f"({unknown[:3]}): give the base transformer these weights were trained from")
        for k, v in tuned.items():
            if v.shape != base[k].shape:
                raise MetaCanvasError(f"tensor {k}: the fine-tuned DiT has {tuple(v.shape)}, the base "
                                      f"{tuple(base[k].shape)}: give the base these weights were trained from")
        # the difference in ComfyUI's names: a fused weight's whole difference (its unchanged parts zero)
        native_tuned, native_base = lay.native_state_dict({**base, **tuned}), lay.native_state_dict(base)
        tensors, skipped = {}, {}
        for nk, v in native_tuned.items():
            delta = v.float() - native_base[nk].float()
            if not delta.any():
                continue
            if lay.lora_unpatchable(nk):
                skipped[nk] = delta.abs().max().item()
                continue
            name = PREFIX + nk
            if name.endswith(".weight"):
                tensors[name[: -len(".weight")] + ".diff"] = delta.contiguous()
            elif name.endswith(".bias"):
                tensors[name[: -len(".bias")] + ".diff_b"] = delta.contiguous()
            else:
                tensors[name + ".diff"] = delta.contiguous()
    if not tensors:
        raise MetaCanvasError(f"the DiT part of {weights.name!r} equals the base DiT: nothing to convert")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    skipped = locals().get("skipped", {})
    return {"out": str(out), "tensors": len(tensors), "format": fmt, "dit_part": weights.dit.kind,
            "not_in_lora": skipped}

"""`python -m metacanvas_core cost`: estimated memory and compute of one training step on each real backbone.

The models are built on PyTorch's meta device from the real configs (../shared/reference-configs: SANA 1600M
512px, FLUX.1 Kontext dev, Wan 2.2 TI2V 5B; planner Qwen2.5-VL-7B) with the real diffusers/transformers classes,
so parameter counts are exact. One forward pass per model runs on meta tensors (no memory, no compute) under
PyTorch's FLOP counter and a saved-tensor hook, so forward FLOPs (matmuls/convolutions) and the activations kept for
backward are measured from the real code, not from a formula. Everything else is a stated assumption, so the
figures are ESTIMATES:
- attention is counted as flash attention keeps it (q, k, v, output and the row log-sum-exp; never the S x S
  matrix), as on a GPU with a fused kernel;
- activations in bf16 at batch 1; with gradient checkpointing, only each DiT block's input is kept plus one block's
  activations during its recomputation;
- backward = 2x forward FLOPs for trained weights, 1x where only input gradients flow (frozen DiT under a LoRA,
  the frozen planner the canvas tokens' gradient crosses); checkpointing adds one more DiT forward;
- weights: the trainer keeps the DiT in float32 (bf16 autocast), AdamW: float32 gradient + two moments per trained
  parameter (16 bytes with the weight); planner frozen in bf16; VAE latents precomputed (not counted);
- 128 prompt tokens, a 16x16 canvas (256 tokens) for every backbone; time at 40 % of an H100's 989 dense bf16
  TFLOP/s.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetaCanvasError

PLANNER = "Qwen--Qwen2.5-VL-7B-Instruct"
TEXT_TOKENS, CANVAS_GRID = 128, [1, 16, 16]
PEAK_FLOPS, MFU = 989e12, 0.4
META = torch.device("meta")
BF16 = torch.bfloat16


@dataclass
class Backbone:
    label: str
    folder: str
    setting: str  # the size costed
    tokens: int  # DiT image/video tokens the canvas is added to
    grid: tuple[int, int, int]  # (frames, rows, cols) of those tokens

    def inputs(self, cfg: dict) -> dict:
        t = lambda *s: torch.empty(*s, device=META, dtype=BF16)  # noqa: E731
        cls = cfg["_class_name"]
        if cls == "SanaTransformer2DModel":
            return dict(hidden_states=t(1, cfg["in_channels"], 16, 16), encoder_hidden_states=t(1, TEXT_TOKENS,
                        cfg["caption_channels"]), timestep=t(1), return_dict=False)
        if cls == "FluxTransformer2DModel":  # target + reference image tokens in one sequence (Kontext)
            n = 2 * self.tokens
            return dict(hidden_states=t(1, n, cfg["in_channels"]), encoder_hidden_states=t(1, TEXT_TOKENS,
                        cfg["joint_attention_dim"]), pooled_projections=t(1, cfg["pooled_projection_dim"]),
                        timestep=t(1), guidance=t(1), img_ids=torch.empty(n, 3, device=META),
                        txt_ids=torch.empty(TEXT_TOKENS, 3, device=META), return_dict=False)
        if cls == "WanTransformer3DModel":
            f, h, w = self.grid
            p = cfg["patch_size"]
            return dict(hidden_states=t(1, cfg["in_channels"], f * p[0], h * p[1], w * p[2]),
                        encoder_hidden_states=t(1, TEXT_TOKENS, cfg["text_dim"]), timestep=t(1), return_dict=False)
        raise MetaCanvasError(f"cost: no input recipe for {cls}")


BACKBONES = (
    Backbone("SANA 1600M", "Efficient-Large-Model--Sana_1600M_512px_diffusers", "512x512 (DC-AE f32: 16x16 tokens)",
             256, (1, 16, 16)),
    Backbone("FLUX.1 Kontext dev", "black-forest-labs--FLUX.1-Kontext-dev",
             "1024x1024 + a 1024x1024 reference (2 x 64x64 tokens)", 4096, (1, 64, 64)),
    Backbone("Wan 2.2 TI2V 5B", "Wan-AI--Wan2.2-TI2V-5B-Diffusers",
             "1280x704, 121 frames (31 x 22 x 40 tokens)", 31 * 22 * 40, (31, 22, 40)),
)


class _FlashAttention(torch.autograd.Function):
    """SDPA that keeps for backward what a fused flash kernel keeps (q, k, v, out, log-sum-exp per row)."""

    @staticmethod
    def forward(ctx, q, k, v, kwargs):
        with torch.no_grad():
            out = _SDPA(q, k, v, **kwargs)
        lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the cost model only measures the forward
        raise NotImplementedError


_SDPA = F.scaled_dot_product_attention


def _flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    kwargs = dict(attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    return _FlashAttention.apply(query, key, value, kwargs)


@dataclass
class Measured:
    flops: float  # forward
    saved: float  # bytes kept for backward
    saved_ckpt: float  # ... with block-wise gradient checkpointing


def measure(module: nn.Module, call) -> Measured:
    """Run `call()` (a forward of `module` on meta tensors) under the FLOP counter and a saved-tensor hook."""
    from torch.utils.flop_counter import FlopCounterMode

    saved, blocks = [0], []
    # The blocks checkpointing wraps: the members of the model's own top-level block lists.
    blocks_of = [m for lst in module.children() if isinstance(lst, nn.ModuleList) for m in lst]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    def pre(mod, args, kwargs):
        first = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
        blocks.append([saved[0], 0, 0 if first is None else first.numel() * first.element_size()])

    def post(mod, args, kwargs, out):
        blocks[-1][1] = saved[0] - blocks[-1][0]

    handles = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in blocks_of]
    handles += [m.register_forward_hook(post, with_kwargs=True) for m in blocks_of]
    counter = FlopCounterMode(display=False)
    F.scaled_dot_product_attention = _flash_sdpa
    try:
        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            call()
    finally:
        F.scaled_dot_product_attention = _SDPA
        for h in handles:
            h.remove()
    inside = sum(b[1] for b in blocks)
    ckpt = saved[0] - inside + sum(b[2] for b in blocks) + max((b[1] for b in blocks), default=0)
    return Measured(float(counter.get_total_flops()), float(saved[0]), float(ckpt))


def _config(folder: Path) -> dict:
    found = sorted(glob.glob(str(folder / "transformer" / "config*.json")))
    if not found:
        raise MetaCanvasError(f"cost: no transformer/config*.json in {folder}")
    return json.loads(Path(found[0]).read_text())


def _dit(cfg: dict) -> nn.Module:
    import diffusers

    cls = getattr(diffusers, cfg["_class_name"])
    with META:
        model = cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    return model.to(BF16).requires_grad_(True)


def _lora_params(dit: nn.Module, rank: int) -> int:
    from .dit_lora import lora_target_names

    mods = dict(dit.named_modules())
    total = 0
    for name in lora_target_names(dit):
        m = mods[name]
        d_in, d_out = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        total += rank * (d_in + d_out)
    return total


def _planner(configs: Path):
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    cfg = AutoConfig.from_pretrained(configs / PLANNER)
    with META:
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=BF16)
    return model.requires_grad_(False)  # frozen: only the canvas tokens' gradient crosses it


def cost_table(configs: Path, lora_rank: int) -> list[dict]:
    from ..connectors import ConnectorConfig, MetaCanvasConnector

    configs = configs.resolve()
    missing = [d for d in (PLANNER, *(b.folder for b in BACKBONES)) if not (configs / d).is_dir()]
    if missing:
        raise MetaCanvasError(f"cost: the real configs are not in {configs} (missing {', '.join(missing)}); they ship "
                              "beside the clone as ../shared/reference-configs, or pass --configs FOLDER")
    planner = _planner(configs)
    hidden = planner.config.text_config.hidden_size
    lm = planner.model.language_model
    n_canvas = CANVAS_GRID[0] * CANVAS_GRID[1] * CANVAS_GRID[2]
    x = torch.empty(1, TEXT_TOKENS + n_canvas, hidden, device=META, dtype=BF16, requires_grad=True)
    pos = torch.zeros(3, 1, x.shape[1], dtype=torch.long, device=META)
    plan = measure(lm, lambda: lm(inputs_embeds=x, position_ids=pos, use_cache=False))
    planner_params = sum(p.numel() for p in planner.parameters())
    rows = []
    for bb in BACKBONES:
        cfg = _config(configs / bb.folder)
        dit = _dit(cfg)
        dit_params = sum(p.numel() for p in dit.parameters())
        inputs = bb.inputs(cfg)
        fwd = measure(dit, lambda: dit(**inputs))
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        caption = cfg.get("caption_channels") or cfg.get("joint_attention_dim") or cfg.get("text_dim")
        with META:
            conn = MetaCanvasConnector(ConnectorConfig(hidden, heads * head_dim, caption, canvas_grid=CANVAS_GRID))
        conn.to(BF16)
        conn_params = sum(p.numel() for p in conn.parameters())
        d = heads * head_dim
        lat = torch.empty(1, bb.tokens, d, device=META, dtype=BF16)
        t = torch.empty(1, device=META)
        fuser = measure(conn.canvas_fuser, lambda: conn.canvas_fuser(lat, lat, t, *bb.grid[1:]))
        states = torch.empty(1, n_canvas, hidden, device=META, dtype=BF16)
        text = torch.empty(1, TEXT_TOKENS, hidden, device=META, dtype=BF16)
        once = measure(conn, lambda: (conn.canvas_encoder(states), conn.text_connector(text)))
        conn_fwd = fuser.flops + once.flops
        for mode in ("full", f"LoRA r{lora_rank}"):
            full = mode == "full"
            trained = (dit_params if full else _lora_params(dit, lora_rank)) + conn_params
            states_gb = (16 * trained + (0 if full else 4 * dit_params) + 2 * planner_params) / 1e9
            act = fuser.saved + once.saved + plan.saved
            dit_bwd = 2 if full else 1
            step = (1 + dit_bwd) * fwd.flops + 3 * conn_fwd + 2 * plan.flops
            rows.append({
                "backbone": bb.label, "setting": bb.setting, "dit": mode,
                "dit_params_B": round(dit_params / 1e9, 3), "connector_params_M": round(conn_params / 1e6, 1),
                "planner_params_B": round(planner_params / 1e9, 2), "trained_params_M": round(trained / 1e6, 1),
                "weights_grads_adam_GB": round(states_gb, 1),
                "activations_GB": round((fwd.saved + act) / 1e9, 1),
                "activations_ckpt_GB": round((fwd.saved_ckpt + act) / 1e9, 1),
                "tflops_per_sample": round(step / 1e12, 2),
                "tflops_per_sample_ckpt": round((step + fwd.flops) / 1e12, 2),
                "h100_s_per_sample": round(step / (PEAK_FLOPS * MFU), 3),
                "planner_share_of_step_pct": round(100 * 2 * plan.flops / step, 1),
                "fuser_share_per_dit_call_pct": round(100 * fuser.flops / fwd.flops, 2),
                "connector_share_per_step_pct": round(100 * 3 * conn_fwd / ((1 + dit_bwd) * fwd.flops), 2),
            })
    return rows


COLUMNS = (("backbone", "backbone"), ("dit", "DiT"), ("dit_params_B", "DiT params (B)"),
           ("trained_params_M", "trained (M)"), ("weights_grads_adam_GB", "weights+grads+AdamW (GB)"),
           ("activations_GB", "activations/sample (GB)"), ("activations_ckpt_GB", "... with ckpt (GB)"),
           ("tflops_per_sample", "TFLOP/sample/step"), ("tflops_per_sample_ckpt", "... with ckpt"),
           ("h100_s_per_sample", "H100 s/sample"), ("planner_share_of_step_pct", "planner % of step"),
           ("fuser_share_per_dit_call_pct", "fuser % of DiT call"),
           ("connector_share_per_step_pct", "connector % of DiT step"))


def markdown(rows: list[dict]) -> str:
    lines = ["ESTIMATES (see `python -m metacanvas_core cost --help` and metacanvas_core/training/cost.py for the "
             "assumptions); batch 1 per GPU, no sharding (FSDP / ZeRO divide the weights+grads+AdamW column by the "
             "number of GPUs).", ""]
    lines += ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    lines += ["", "Settings: " + "; ".join(f"{b.label}: {b.setting}" for b in BACKBONES) +
              f"; planner {PLANNER.split('--')[1]} ({rows[0]['planner_params_B']} B, frozen) over {TEXT_TOKENS} prompt "
              f"+ {CANVAS_GRID[1] * CANVAS_GRID[2]} canvas tokens."]
    return "\n".join(lines)

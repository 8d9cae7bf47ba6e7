"""`python -m metacanvas_core cost`: estimated per-GPU memory and compute of one training step on each real backbone.

The models are built on PyTorch's meta device from the real configs (../shared/reference-configs: SANA 1600M
512px, FLUX.1 Kontext dev, Wan 2.2 TI2V 5B; planner Qwen2.5-VL-7B) with the real diffusers/transformers classes,
so parameter counts are exact. One forward pass per model runs on meta tensors (no memory, no compute) under
PyTorch's FLOP counter and a saved-tensor hook, so forward FLOPs (matmuls/convolutions) and the activations kept for
backward are measured from the real code, not from a formula. Everything else is a stated assumption, so the
figures are ESTIMATES:
- weights are weights: a saved tensor that is a model's own parameter (a linear layer keeps its weight for its
  input's gradient) is not counted as an activation;
- frozen models (planner, VAE; the DiT under a LoRA) are held in the run's precision (bf16: 2 bytes per parameter,
  fp32: 4), as the trainer holds them; trained parameters in float32 with a float32 gradient and two AdamW moments
  (16 bytes each); a fully trained DiT under bf16 autocast also holds a bf16 copy of its weights (autocast's cast
  cache) unless FSDP / ZeRO-3 shard it (then two gathered blocks in bf16 are counted instead);
- sharding divides only what is sharded: the trainer wraps the DiT (with its LoRA) and the connector; the frozen
  planner and VAE are no part of the wrapped model and stay whole on every GPU. ZeRO-2 divides gradients and AdamW
  moments; ZeRO-3 and FSDP also the weights of the wrapped DiT, frozen or not;
- the canvas grid is the recipe's: by default the DiT's token grid (the trainer's default), or --canvas-grid; the
  planner's sequence is 128 prompt tokens + what it sees (the edit's source image, the image-to-video start frame,
  at Qwen2.5-VL's 28 px per token) + the canvas, and all of it keeps activations (the canvas tokens' gradient
  crosses the planner); with gradient checkpointing the planner's are checkpointed too, as the trainer does;
- activations at the run's precision (bf16: as measured; fp32: twice), times the per-GPU batch; with gradient
  checkpointing, only each block's input is kept plus one block's activations during its recomputation; a DiT LoRA
  keeps each adapted projection's input as a full fine-tune does (measured on the full model);
- attention is counted as flash attention keeps it (q, k, v, output and the row log-sum-exp; never the S x S
  matrix), as on a GPU with a fused kernel;
- not counted: VAE encoding (latents precomputed with --cache-dir, or transient under no_grad), the planner's vision
  tower (no gradient, transient), CUDA context and allocator fragmentation (leave ~10 % headroom);
- backward = 2x forward FLOPs for trained weights, 1x where only input gradients flow (frozen DiT under a LoRA,
  the frozen planner the canvas tokens' gradient crosses); checkpointing adds one more forward; time at 40 % of an
  H100's 989 dense bf16 TFLOP/s.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetaCanvasError

PLANNER = "Qwen--Qwen2.5-VL-7B-Instruct"
TEXT_TOKENS, PLANNER_PX_PER_TOKEN = 128, 28
PEAK_FLOPS, MFU = 989e12, 0.4
META = torch.device("meta")
BF16 = torch.bfloat16
SHARDING = ("ddp", "zero2", "zero3", "fsdp")
GB = 1e9


@dataclass(frozen=True)
class Backbone:
    key: str  # what --canvas-grid KEY=ROWSxCOLS names
    label: str
    folder: str
    width: int
    height: int
    grid: tuple[int, int, int]  # (latent frames, rows, cols) of the DiT tokens the canvas is added to
    keyframes: int = 1  # canvas keyframes (the trainer's --keyframes default for clips)
    frames: int = 1  # video frames
    planner_sees: str = ""  # what the planner sees before the prompt in the costed task

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def setting(self) -> str:
        f, h, w = self.grid
        size = f"{self.width}x{self.height}" + (f", {self.frames} frames" if self.frames > 1 else "")
        return f"{size} ({f} x {h}x{w} tokens)" if f > 1 else f"{size} ({h}x{w} tokens)"

    def visual_tokens(self) -> int:
        """Planner tokens of what it sees (Qwen2.5-VL: 14 px patches merged 2x2, sizes rounded to 28 px)."""
        if not self.planner_sees:
            return 0
        return round(self.width / PLANNER_PX_PER_TOKEN) * round(self.height / PLANNER_PX_PER_TOKEN)

    def inputs(self, cfg: dict) -> dict:
        t = lambda *s: torch.empty(*s, device=META, dtype=BF16)  # noqa: E731
        cls = cfg["_class_name"]
        if cls == "SanaTransformer2DModel":
            return dict(hidden_states=t(1, cfg["in_channels"], *self.grid[1:]), encoder_hidden_states=t(
                1, TEXT_TOKENS, cfg["caption_channels"]), timestep=t(1), return_dict=False)
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
    Backbone("sana", "SANA 1600M", "Efficient-Large-Model--Sana_1600M_512px_diffusers", 512, 512, (1, 16, 16)),
    Backbone("flux", "FLUX.1 Kontext dev", "black-forest-labs--FLUX.1-Kontext-dev", 1024, 1024, (1, 64, 64),
             planner_sees="the source image"),  # the reference's 64x64 tokens join the DiT's sequence too
    Backbone("wan", "Wan 2.2 TI2V 5B", "Wan-AI--Wan2.2-TI2V-5B-Diffusers", 1280, 704, (31, 22, 40), keyframes=3,
             frames=121, planner_sees="the start frame (image-to-video)"),
)
BY_KEY = {b.key: b for b in BACKBONES}


@dataclass(frozen=True)
class Recipe:
    """What a training run is, as far as its memory goes."""

    dit: str = "lora"  # "lora" or "full"
    lora_rank: int = 64
    precision: str = "bf16"  # --mixed-precision: bf16 (or fp16) / "no" (fp32)
    checkpointing: bool = True  # --gradient-checkpointing (the DiT's blocks and the planner's layers)
    batch: int = 1  # samples per GPU per micro-batch (--batch / (GPUs x --grad-accum))
    gpus: int = 1
    sharding: str = "ddp"  # ddp (nothing sharded), zero2, zero3, fsdp
    canvas_grid: tuple[int, int] | None = None  # rows, cols (None: the DiT's token grid, the trainer's default)

    def describe(self, bb: Backbone) -> str:
        rows, cols = self.canvas_grid or bb.grid[1:]
        dit = f"LoRA r{self.lora_rank}" if self.dit == "lora" else "full DiT"
        prec = "bf16" if self.precision in ("bf16", "fp16") else "fp32"
        return (f"{prec}, {dit}, {'' if self.checkpointing else 'no '}gradient checkpointing, batch {self.batch}/GPU, "
                f"{bb.setting}, canvas {bb.keyframes} x {rows}x{cols}, {self.gpus} GPU{'s' if self.gpus > 1 else ''} "
                f"{self.sharding}")


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
    saved: float  # bytes kept for backward, the module's own weights not counted (they are weights, held anyway)
    saved_ckpt: float  # ... with block-wise gradient checkpointing
    largest_block: int = 0  # parameters of the largest checkpointed block (FSDP gathers one such unit at a time)


def measure(module: nn.Module, call) -> Measured:
    """Run `call()` (a forward of `module` on meta tensors) under the FLOP counter and a saved-tensor hook.

    A saved tensor that is one of the module's parameters (or a view of one, as a linear layer saves its transposed
    weight to compute its input's gradient) is no activation: the weights are counted once, as weights."""
    from torch.utils.flop_counter import FlopCounterMode

    saved, blocks = [0], []
    params = {id(p) for p in module.parameters()}
    # The blocks checkpointing wraps: the members of the model's own top-level block lists.
    blocks_of = [m for lst in module.children() if isinstance(lst, nn.ModuleList) for m in lst]

    def pack(t):
        if id(t) not in params and (t._base is None or id(t._base) not in params):
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
    largest = max((sum(p.numel() for p in m.parameters()) for m in blocks_of), default=0)
    return Measured(float(counter.get_total_flops()), float(saved[0]), float(ckpt), largest)


def _config(folder: Path, part: str = "transformer") -> dict:
    found = sorted(glob.glob(str(folder / part / "config*.json")))
    if not found:
        raise MetaCanvasError(f"cost: no {part}/config*.json in {folder}")
    return json.loads(Path(found[0]).read_text())


def _vae_params(folder: Path) -> int:
    import diffusers

    cfg = _config(folder, "vae")
    with META:
        vae = getattr(diffusers, cfg["_class_name"]).from_config({k: v for k, v in cfg.items()
                                                                   if not k.startswith("_")})
    return sum(p.numel() for p in vae.parameters())


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


@dataclass
class Measures:
    """One backbone's exact parameter counts and measured forward at one canvas grid."""

    bb: Backbone
    canvas_grid: tuple[int, int, int]
    dit_params: int
    lora_params: int
    conn_params: int
    planner_params: int
    vae_params: int
    dit: Measured
    planner: Measured
    fuser: Measured
    once: Measured  # canvas encoder + text connector, once per sample


_CACHE: dict = {}


def _check_configs(configs: Path) -> Path:
    configs = Path(configs).resolve()
    missing = [d for d in (PLANNER, *(b.folder for b in BACKBONES)) if not (configs / d).is_dir()]
    if missing:
        raise MetaCanvasError(f"cost: the real configs are not in {configs} (missing {', '.join(missing)}); they ship "
                              "beside the clone as ../shared/reference-configs, or pass --configs FOLDER")
    return configs


def measures(configs: Path, key: str, canvas_grid: tuple[int, int] | None = None, lora_rank: int = 64) -> Measures:
    """Measure backbone `key` with a canvas of `canvas_grid` rows x cols (default: its token grid); cached."""
    from ..connectors import ConnectorConfig, MetaCanvasConnector

    configs = _check_configs(configs)
    bb = BY_KEY[key]
    grid = (bb.keyframes, *(canvas_grid or bb.grid[1:]))
    ident = (str(configs), key, grid, lora_rank)
    if ident in _CACHE:
        return _CACHE[ident]
    if ("planner", str(configs)) not in _CACHE:
        _CACHE[("planner", str(configs))] = _planner(configs)
    planner = _CACHE[("planner", str(configs))]
    hidden = planner.config.text_config.hidden_size
    lm = planner.model.language_model
    n_canvas = math.prod(grid)
    x = torch.empty(1, TEXT_TOKENS + bb.visual_tokens() + n_canvas, hidden, device=META, dtype=BF16,
                    requires_grad=True)
    pos = torch.zeros(3, 1, x.shape[1], dtype=torch.long, device=META)
    plan = measure(lm, lambda: lm(inputs_embeds=x, position_ids=pos, use_cache=False))
    cfg = _config(configs / bb.folder)
    dit = _dit(cfg)
    fwd = measure(dit, lambda: dit(**bb.inputs(cfg)))
    caption = cfg.get("caption_channels") or cfg.get("joint_attention_dim") or cfg.get("text_dim")
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    with META:
        conn = MetaCanvasConnector(ConnectorConfig(hidden, d, caption, canvas_grid=list(grid)))
    conn.to(BF16)
    lat = torch.empty(1, bb.tokens, d, device=META, dtype=BF16)
    t = torch.empty(1, device=META)
    fuser = measure(conn.canvas_fuser, lambda: conn.canvas_fuser(lat, lat, t, *bb.grid[1:]))
    states = torch.empty(1, n_canvas, hidden, device=META, dtype=BF16, requires_grad=True)
    text = torch.empty(1, TEXT_TOKENS, hidden, device=META, dtype=BF16)
    once = measure(conn, lambda: (conn.canvas_encoder(states), conn.text_connector(text)))
    m = Measures(bb, grid, sum(p.numel() for p in dit.parameters()), _lora_params(dit, lora_rank),
                 sum(p.numel() for p in conn.parameters()), sum(p.numel() for p in planner.parameters()),
                 _vae_params(configs / bb.folder), fwd, plan, fuser, once)
    _CACHE[ident] = m
    return m


def memory(m: Measures, r: Recipe) -> dict:
    """Per-GPU memory (GB) of recipe `r` from the measures `m` (see the module's assumptions)."""
    if r.sharding not in SHARDING:
        raise MetaCanvasError(f"cost: sharding must be one of {', '.join(SHARDING)}, not {r.sharding!r}")
    half = r.precision in ("bf16", "fp16")
    frozen_b = 2 if half else 4
    n = r.gpus if r.sharding != "ddp" else 1
    weights_sharded = r.sharding in ("zero3", "fsdp")
    full = r.dit == "full"
    trained = (m.dit_params if full else m.lora_params) + m.conn_params
    if r.sharding == "zero2":  # gradients and moments split, the float32 weights replicated
        trained_b = 4 * trained + 12 * trained / n
    else:
        trained_b = 16 * trained / (n if weights_sharded else 1)
    frozen_dit = 0 if full else m.dit_params * frozen_b / (n if weights_sharded else 1)
    if weights_sharded:  # one unit in use, the next prefetched, gathered in the compute precision
        gathered = 2 * m.dit.largest_block * frozen_b
    else:
        gathered = 2 * m.dit_params if full and half else 0  # autocast's bf16 copy of the float32 DiT
    dit_act = m.dit.saved_ckpt if r.checkpointing else m.dit.saved
    plan_act = m.planner.saved_ckpt if r.checkpointing else m.planner.saved
    act = (dit_act + plan_act + m.fuser.saved + m.once.saved) * (1 if half else 2) * r.batch
    parts = {"planner_weights_GB": m.planner_params * frozen_b, "vae_weights_GB": m.vae_params * frozen_b,
             "dit_frozen_weights_GB": frozen_dit, "trained_states_GB": trained_b, "gathered_GB": gathered,
             "activations_GB": act}
    out = {k: round(v / GB, 2) for k, v in parts.items()}
    out["total_GB"] = round(sum(parts.values()) / GB, 1)
    out["trained_params_M"] = round(trained / 1e6, 1)
    return out


def flops(m: Measures, r: Recipe) -> dict:
    conn_fwd = m.fuser.flops + m.once.flops
    dit_bwd = 2 if r.dit == "full" else 1
    step = (1 + dit_bwd) * m.dit.flops + 3 * conn_fwd + 2 * m.planner.flops
    if r.checkpointing:
        step += m.dit.flops + m.planner.flops
    return {"tflops_per_sample": round(step / 1e12, 2), "h100_s_per_sample": round(step / (PEAK_FLOPS * MFU), 3),
            "planner_share_of_step_pct": round(100 * (2 + r.checkpointing) * m.planner.flops / step, 1),
            "fuser_share_per_dit_call_pct": round(100 * m.fuser.flops / m.dit.flops, 2)}


def estimate(configs: Path, key: str, r: Recipe) -> dict:
    """One row: backbone `key` trained with recipe `r`, per GPU."""
    m = measures(configs, key, r.canvas_grid, r.lora_rank)
    return {"backbone": m.bb.label, "recipe": r.describe(m.bb), "dit_params_B": round(m.dit_params / 1e9, 3),
            "planner_params_B": round(m.planner_params / 1e9, 2), "connector_params_M": round(m.conn_params / 1e6, 1),
            "canvas_tokens": math.prod(m.canvas_grid), "planner_tokens": TEXT_TOKENS + m.bb.visual_tokens()
            + math.prod(m.canvas_grid), **memory(m, r), **flops(m, r)}


# The recipe the docs recommend per backbone on one 80 GB GPU (DDP: nothing sharded), bf16, DiT LoRA r64, gradient
# checkpointing: SANA at its token grid; FLUX and Wan with a canvas coarser than the token grid by 2 per side
# (the paper's Wan 2.2 canvas: 3 x 11x20 for 22x40 tokens).
RECOMMENDED = {"sana": Recipe(batch=32), "flux": Recipe(batch=1, canvas_grid=(32, 32)),
               "wan": Recipe(batch=1, canvas_grid=(11, 20))}


def cost_table(configs: Path, lora_rank: int = 64, base: Recipe | None = None,
               canvas: dict[str, tuple[int, int]] | None = None) -> list[dict]:
    """For every backbone: the full DiT and the LoRA, with and without checkpointing, in recipe `base` (default:
    bf16, batch 1, one GPU) at the canvas grid `canvas[key]` (default: the token grid)."""
    base = replace(base or Recipe(), lora_rank=lora_rank)
    rows = []
    for bb in BACKBONES:
        for dit in ("full", "lora"):
            for ckpt in (False, True):
                r = replace(base, dit=dit, checkpointing=ckpt, canvas_grid=(canvas or {}).get(bb.key, base.canvas_grid))
                rows.append({"dit": "full" if dit == "full" else f"LoRA r{lora_rank}", "checkpointing": ckpt,
                             **estimate(configs, bb.key, r)})
    return rows


def recommended(configs: Path) -> list[dict]:
    return [estimate(configs, key, r) for key, r in RECOMMENDED.items()]


COLUMNS = (("backbone", "backbone"), ("dit", "DiT"), ("checkpointing", "ckpt"), ("canvas_tokens", "canvas tokens"),
           ("planner_tokens", "planner tokens"), ("trained_params_M", "trained (M)"),
           ("planner_weights_GB", "planner weights"), ("vae_weights_GB", "VAE"),
           ("dit_frozen_weights_GB", "frozen DiT"), ("trained_states_GB", "trained+grads+AdamW"),
           ("gathered_GB", "bf16 copy / gathered"), ("activations_GB", "activations"), ("total_GB", "total GB/GPU"),
           ("tflops_per_sample", "TFLOP/sample"), ("h100_s_per_sample", "H100 s/sample"),
           ("planner_share_of_step_pct", "planner % of step"))
REC_COLUMNS = (("backbone", "backbone"), ("recipe", "recipe"), ("planner_weights_GB", "planner weights"),
               ("vae_weights_GB", "VAE"), ("dit_frozen_weights_GB", "frozen DiT"),
               ("trained_states_GB", "trained+grads+AdamW"), ("activations_GB", "activations"),
               ("total_GB", "total GB/GPU"), ("h100_s_per_sample", "H100 s/sample"))


def _table(rows: list[dict], columns) -> list[str]:
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r[k]) for k, _ in columns) + " |" for r in rows]


def markdown(rows: list[dict], rec: list[dict] | None = None, base: Recipe | None = None) -> str:
    r0, b = rows[0], base or Recipe()
    prec = "bf16" if b.precision in ("bf16", "fp16") else "fp32"
    lines = [f"ESTIMATES (assumptions: metacanvas_core/training/cost.py); memory per GPU in GB; {prec}, batch "
             f"{b.batch}/GPU, {b.gpus} GPU{'s' if b.gpus > 1 else ''} {b.sharding}; each backbone at the setting "
             "below, its canvas at the token grid unless --canvas-grid.", ""]
    lines += _table(rows, COLUMNS)
    if rec:
        lines += ["", "Recommended recipes (one 80 GB GPU each; ~10 % headroom for the CUDA context and "
                  "fragmentation):",
                  ""] + _table(rec, REC_COLUMNS)
    lines += ["", "Settings: " + "; ".join(f"{b.label}: {b.setting}" + (f", the planner sees {b.planner_sees}"
                                                                       if b.planner_sees else "") for b in BACKBONES)
              + f"; planner {PLANNER.split('--')[1]} ({r0['planner_params_B']} B, frozen) over {TEXT_TOKENS} prompt "
              "tokens + what it sees + the canvas."]
    return "\n".join(lines)

"""The native route's side of each backbone: how ComfyUI's own model of an architecture lays out what the canvas
needs, without importing ComfyUI (the nodes hand in plain tensors and shapes).

Per architecture: the name ComfyUI's model_base class goes by, where the canvas enters (the hook), how the latent
that reaches the diffusion model gives the generated token grid, which argument of the diffusion model's forward is
its transformer_options, how its timestep argument becomes the per-sample noise level the connector was trained
with (the pack's 0..1000 scheduler timestep) and which frames are given (clean), the text width its conditioning
carries, and how the diffusers checkpoint's keys read in ComfyUI's own key names. The nodes ask these; they never
branch on the architecture themselves.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..errors import MetaCanvasError


class NativeLayout(ABC):
    """What the native route needs to know about ComfyUI's own model of one architecture."""

    architecture: ClassVar[str]  # as MetaCanvas weights name it ("wan", "flux")
    title: ClassVar[str]  # as users read it
    model_base_classes: ClassVar[tuple[str, ...]]  # comfy.model_base class names of this architecture
    hook: ClassVar[str]  # "double_block_0" (a dit replace of block 0) or "post_input"
    options_arg: ClassVar[int]  # position of transformer_options among the diffusion model's forward arguments
    timestep_multiplier: ClassVar[float]  # ComfyUI's timestep = sigma x this, where model_sampling does not say

    @abstractmethod
    def token_grid(self, x_shape: tuple[int, ...], patch_size: tuple[int, ...]) -> tuple[int, int, int]:
        """(frames, rows, cols) of generated tokens for the latent `x_shape` that reaches the diffusion model."""

    def generated_tokens(self, grid: tuple[int, int, int]) -> int:
        """The generated grid's tokens come first in the hooked sequence (references, if any, follow)."""
        return math.prod(grid)

    def noise_levels(self, timestep: torch.Tensor, batch: int, frames: int, multiplier: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """From the diffusion model's timestep argument ((B,) or per frame (B, F)) in ComfyUI's scale (sigma x
        `multiplier`): the connector's timestep per sample (B,) in the pack's 0..1000 scale (the highest level of
        the sample, as the pack's adapters take the generated tokens' level) and which frames are given (B, F)
        bool (level 0 while others are not), which never get the canvas."""
        t = timestep.float().reshape(timestep.shape[0], -1)
        if t.shape[0] != batch:
            t = t.expand(batch, -1) if t.shape[0] == 1 else t
        if t.shape[1] not in (1, frames):
            raise MetaCanvasError(f"a timestep of shape {tuple(timestep.shape)} does not fit {frames} latent frames")
        t = t.expand(batch, frames) if t.shape[1] == 1 else t
        level = t.amax(dim=1) * (1000.0 / multiplier)
        clean = (t == 0) & (level[:, None] > 0)
        return level, clean

    def model_widths(self, diffusion_model) -> tuple[int, int]:
        """(DiT width, text width) of ComfyUI's diffusion model of this architecture."""
        return diffusion_model.dim, diffusion_model.text_dim

    def cond_extras(self, text: torch.Tensor, mask: torch.Tensor, backbone_config: dict) -> dict:
        """What else the CONDITIONING entry carries besides the text context and the plan (e.g. FLUX's pooled);
        `backbone_config` is the DiT config the weights were trained on."""
        return {}

    def text_context(self, text: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
        """The model's text context from a plan's text (B, L, C) and mask (B, L): zero past each prompt (the pack's
        adapters feed their DiTs so), padded with zeros to `length` tokens."""
        text = (text * mask[..., None].to(text.dtype)).float()
        if text.shape[1] < length:
            text = torch.cat([text, text.new_zeros(text.shape[0], length - text.shape[1], text.shape[2])], 1)
        return text.contiguous()

    def check_text(self, context_width: int, connector_width: int) -> None:
        if context_width != connector_width:
            raise MetaCanvasError(
                f"the MODEL's text input is {context_width} wide but the MetaCanvas weights' text connector "
                f"makes {connector_width}: load the {self.title} model these weights were trained with (or weights "
                "trained for this model)"
            )

    # -- keys: diffusers checkpoint -> ComfyUI's own names -------------------------------------------------------

    @abstractmethod
    def native_key(self, key: str) -> str | None:
        """The ComfyUI name of a diffusers transformer tensor (None: it has no counterpart). Several diffusers
        tensors may share one name: they are parts of one fused ComfyUI tensor (see `native_part`)."""

    def native_part(self, key: str) -> tuple[str, int, int, bool] | None:
        """Where a diffusers tensor goes in ComfyUI's model: (ComfyUI name, its part's index among the fused tensor's
        parts (stacked in that order along dim 0), how many parts the fused tensor has (1: not fused), whether the
        tensor's two halves along dim 0 are swapped on the way), or None (no counterpart)."""
        nk = self.native_key(key)
        return None if nk is None else (nk, 0, 1, False)

    def native_slots(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, int, int, bool]]:
        """For diffusers tensors of these shapes: {diffusers key: (ComfyUI name, first row in it, rows, swapped)};
        every ComfyUI tensor filled exactly once, by all its parts (else an error)."""
        parts: dict[str, dict[int, str]] = {}
        counts: dict[str, int] = {}
        slots, unknown = {}, []
        for k in shapes:
            where = self.native_part(k)
            if where is None:
                unknown.append(k)
                continue
            nk, i, n, _ = where
            if i in parts.setdefault(nk, {}) or counts.setdefault(nk, n) != n:
                raise MetaCanvasError(f"{k!r} and {parts[nk].get(i)!r} both go to part {i} of ComfyUI's {nk!r}")
            parts[nk][i] = k
        if unknown:
            raise MetaCanvasError(
                f"the {self.title} transformer has tensors ComfyUI's model has no place for: {unknown[:4]}"
            )
        for nk, got in parts.items():
            if sorted(got) != list(range(counts[nk])):
                raise MetaCanvasError(f"ComfyUI's {nk!r} is fused from {counts[nk]} tensors; the transformer has "
                                      f"only {sorted(got.values())}")
            row = 0
            for i in range(counts[nk]):
                k = got[i]
                slots[k] = (nk, row, shapes[k][0] if shapes[k] else 1, self.native_part(k)[3])
                row += slots[k][2]
        return slots

    def native_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        slots = self.native_slots({k: tuple(v.shape) for k, v in state.items()})
        fused: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for k, v in state.items():
            nk, row, _, swapped = slots[k]
            fused.setdefault(nk, []).append((row, swap_halves(v) if swapped else v))
        return {nk: vs[0][1] if len(vs) == 1 else torch.cat([v for _, v in sorted(vs, key=lambda p: p[0])], 0)
                for nk, vs in fused.items()}

    def diffusers_state_dict(self, native: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]
                             ) -> dict[str, torch.Tensor]:
        """The inverse of `native_state_dict` for a transformer whose diffusers tensors have these shapes."""
        out = {}
        for k, (nk, row, rows, swapped) in self.native_slots(shapes).items():
            v = native[nk] if native[nk].shape == torch.Size(shapes[k]) else native[nk][row:row + rows]
            out[k] = swap_halves(v) if swapped else v
        return out

    def lora_unpatchable(self, native_key: str) -> bool:
        """Whether ComfyUI's LoRA loading never reaches this tensor: ModelPatcher patches the parameters of leaf
        modules only (0.3.64 skips "random weights in non leaf modules"), e.g. Wan's per-block `modulation`."""
        return False

    @abstractmethod
    def native_config(self, config: dict) -> dict:
        """ComfyUI's unet_config for the diffusers transformer config `config`."""


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """The two halves along dim 0 swapped (its own inverse): diffusers' FLUX norm_out is (scale, shift), the
    original FLUX's final adaLN (shift, scale)."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], 0)


# Wan: diffusers WanTransformer3DModel names -> ComfyUI's comfy.ldm.wan.model.WanModel (the original Wan names).
_WAN_RENAMES = [
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^patch_embedding\.", "patch_embedding."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^blocks\.(\d+)\.attn1\.to_q\.", r"blocks.\1.self_attn.q."),
    (r"^blocks\.(\d+)\.attn1\.to_k\.", r"blocks.\1.self_attn.k."),
    (r"^blocks\.(\d+)\.attn1\.to_v\.", r"blocks.\1.self_attn.v."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.self_attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.to_q\.", r"blocks.\1.cross_attn.q."),
    (r"^blocks\.(\d+)\.attn2\.to_k\.", r"blocks.\1.cross_attn.k."),
    (r"^blocks\.(\d+)\.attn2\.to_v\.", r"blocks.\1.cross_attn.v."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
]
_WAN_RENAMES = [(re.compile(a), b) for a, b in _WAN_RENAMES]


class WanNative(NativeLayout):
    architecture = "wan"
    title = "Wan 2.2"
    model_base_classes = ("WAN22", "WAN21")
    hook = "double_block_0"
    options_arg = 5  # WanModel.forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, ...)
    timestep_multiplier = 1000.0

    def token_grid(self, x_shape, patch_size):
        _, _, f, h, w = x_shape
        pt, ph, pw = patch_size
        return math.ceil(f / pt), math.ceil(h / ph), math.ceil(w / pw)

    def native_key(self, key: str) -> str | None:
        for pattern, repl in _WAN_RENAMES:
            if pattern.search(key):
                return pattern.sub(repl, key)
        return None

    def lora_unpatchable(self, native_key: str) -> bool:
        return native_key.endswith("modulation")  # held by WanAttentionBlock / Head beside their sub-modules

    def native_config(self, config: dict) -> dict:
        if config.get("image_dim") is not None or config.get("added_kv_proj_dim") is not None:
            raise MetaCanvasError("an image-embedding (Wan 2.1 I2V) transformer is not a Wan 2.2 TI2V layout")
        if config.get("qk_norm") not in ("rms_norm_across_heads", None):
            raise MetaCanvasError(f"Wan qk_norm {config.get('qk_norm')!r} has no counterpart in ComfyUI's Wan model")
        return {
            "image_model": "wan2.1", "model_type": "t2v",
            "patch_size": tuple(config["patch_size"]), "in_dim": config["in_channels"],
            "dim": config["num_attention_heads"] * config["attention_head_dim"], "ffn_dim": config["ffn_dim"],
            "freq_dim": config["freq_dim"], "text_dim": config["text_dim"], "out_dim": config["out_channels"],
            "num_heads": config["num_attention_heads"], "num_layers": config["num_layers"],
            "qk_norm": config.get("qk_norm") is not None, "cross_attn_norm": bool(config["cross_attn_norm"]),
            "eps": config["eps"], "window_size": (-1, -1),
        }


# FLUX: diffusers FluxTransformer2DModel names -> ComfyUI's comfy.ldm.flux.model.Flux (the original FLUX names).
# Fused in ComfyUI: a double block's image / text q, k, v into img_attn.qkv / txt_attn.qkv; a single block's q, k, v
# and proj_mlp into linear1 (stacked along the output rows in this order).
_FLUX_FUSED = [
    (r"^transformer_blocks\.(\d+)\.attn\.to_(?P<part>[qkv])\.(weight|bias)$", r"double_blocks.\1.img_attn.qkv.\3",
     ("q", "k", "v")),
    (r"^transformer_blocks\.(\d+)\.attn\.add_(?P<part>[qkv])_proj\.(weight|bias)$", r"double_blocks.\1.txt_attn.qkv.\3",
     ("q", "k", "v")),
    (r"^single_transformer_blocks\.(\d+)\.attn\.to_(?P<part>[qkv])\.(weight|bias)$", r"single_blocks.\1.linear1.\3",
     ("q", "k", "v", "proj_mlp")),
    (r"^single_transformer_blocks\.(\d+)\.(?P<part>proj_mlp)\.(weight|bias)$", r"single_blocks.\1.linear1.\3",
     ("q", "k", "v", "proj_mlp")),
]
_FLUX_RENAMES = [
    (r"^x_embedder\.", "img_in."),
    (r"^context_embedder\.", "txt_in."),
    (r"^time_text_embed\.timestep_embedder\.linear_1\.", "time_in.in_layer."),
    (r"^time_text_embed\.timestep_embedder\.linear_2\.", "time_in.out_layer."),
    (r"^time_text_embed\.text_embedder\.linear_1\.", "vector_in.in_layer."),
    (r"^time_text_embed\.text_embedder\.linear_2\.", "vector_in.out_layer."),
    (r"^time_text_embed\.guidance_embedder\.linear_1\.", "guidance_in.in_layer."),
    (r"^time_text_embed\.guidance_embedder\.linear_2\.", "guidance_in.out_layer."),
    (r"^norm_out\.linear\.", "final_layer.adaLN_modulation.1."),  # and (scale, shift) -> (shift, scale)
    (r"^proj_out\.", "final_layer.linear."),
    (r"^transformer_blocks\.(\d+)\.attn\.to_out\.0\.", r"double_blocks.\1.img_attn.proj."),
    (r"^transformer_blocks\.(\d+)\.attn\.to_add_out\.", r"double_blocks.\1.txt_attn.proj."),
    (r"^transformer_blocks\.(\d+)\.norm1\.linear\.", r"double_blocks.\1.img_mod.lin."),
    (r"^transformer_blocks\.(\d+)\.norm1_context\.linear\.", r"double_blocks.\1.txt_mod.lin."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"double_blocks.\1.img_mlp.0."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"double_blocks.\1.img_mlp.2."),
    (r"^transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj\.", r"double_blocks.\1.txt_mlp.0."),
    (r"^transformer_blocks\.(\d+)\.ff_context\.net\.2\.", r"double_blocks.\1.txt_mlp.2."),
    (r"^transformer_blocks\.(\d+)\.attn\.norm_q\.weight$", r"double_blocks.\1.img_attn.norm.query_norm.scale"),
    (r"^transformer_blocks\.(\d+)\.attn\.norm_k\.weight$", r"double_blocks.\1.img_attn.norm.key_norm.scale"),
    (r"^transformer_blocks\.(\d+)\.attn\.norm_added_q\.weight$", r"double_blocks.\1.txt_attn.norm.query_norm.scale"),
    (r"^transformer_blocks\.(\d+)\.attn\.norm_added_k\.weight$", r"double_blocks.\1.txt_attn.norm.key_norm.scale"),
    (r"^single_transformer_blocks\.(\d+)\.norm\.linear\.", r"single_blocks.\1.modulation.lin."),
    (r"^single_transformer_blocks\.(\d+)\.proj_out\.", r"single_blocks.\1.linear2."),
    (r"^single_transformer_blocks\.(\d+)\.attn\.norm_q\.weight$", r"single_blocks.\1.norm.query_norm.scale"),
    (r"^single_transformer_blocks\.(\d+)\.attn\.norm_k\.weight$", r"single_blocks.\1.norm.key_norm.scale"),
]
_FLUX_FUSED = [(re.compile(a), b, c) for a, b, c in _FLUX_FUSED]
_FLUX_RENAMES = [(re.compile(a), b) for a, b in _FLUX_RENAMES]


class FluxNative(NativeLayout):
    """FLUX.1-Kontext as ComfyUI's comfy.ldm.flux.model.Flux: 2x2 latent patches as tokens (the pack's order),
    the canvas right after img_in (`post_input`), Kontext reference tokens after the generated ones. The nodes load a
    diffusers FLUX with ComfyUI's own converter (model_detection.convert_diffusers_mmdit); convert-comfy writes the
    same names without ComfyUI (`native_part`: q, k, v (and proj_mlp) fused, norm_out's halves swapped)."""

    architecture = "flux"
    title = "FLUX.1-Kontext"
    model_base_classes = ("Flux",)
    hook = "post_input"
    options_arg = 7  # Flux.forward(x, timestep, context, y, guidance, ref_latents, control, transformer_options, ...)
    timestep_multiplier = 1.0  # ComfyUI's FLUX takes sigma itself
    guidance = 2.5  # the pack's FLUX adapter's (FluxKontextPipeline's) default, for guidance-distilled models

    def token_grid(self, x_shape, patch_size):
        _, _, h, w = x_shape
        p = patch_size if isinstance(patch_size, int) else patch_size[-1]
        return 1, math.ceil(h / p), math.ceil(w / p)

    def model_widths(self, diffusion_model):
        return diffusion_model.hidden_size, diffusion_model.params.context_in_dim

    def cond_extras(self, text, mask, backbone_config):
        """pooled_output as the pack's FLUX adapter derives it (the masked mean of the text sequence, average-pooled
        to pooled_projection_dim; see backbones/flux.py), and its guidance."""
        import torch.nn.functional as F  # noqa: PLC0415

        m = mask.to(text.dtype)[..., None]
        mean = (text * m).sum(1) / m.sum(1).clamp_min(1)
        dim = backbone_config.get("pooled_projection_dim", mean.shape[-1])
        pooled = mean if mean.shape[-1] == dim else F.adaptive_avg_pool1d(mean[:, None], dim)[:, 0]
        return {"pooled_output": pooled.float(), "guidance": self.guidance}

    def text_context(self, text, mask, length):
        # FLUX's joint attention would attend to padding (the pack masks it out): each prompt keeps its own length,
        # and ComfyUI runs a positive and a negative of different lengths in separate calls.
        keep = int(mask.sum(1).max().item())
        return (text[:, :keep] * mask[:, :keep, None].to(text.dtype)).float().contiguous()

    def native_part(self, key: str) -> tuple[str, int, int, bool] | None:
        for pattern, repl, parts in _FLUX_FUSED:
            m = pattern.search(key)
            if m:
                return pattern.sub(repl, key), parts.index(m.group("part")), len(parts), False
        for pattern, repl in _FLUX_RENAMES:
            if pattern.search(key):
                return pattern.sub(repl, key), 0, 1, key.startswith("norm_out.linear.")
        return None

    def native_key(self, key: str) -> str | None:
        where = self.native_part(key)
        return None if where is None else where[0]

    def native_config(self, config: dict) -> dict:
        heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
        return {
            "image_model": "flux", "in_channels": config["in_channels"] // 4,
            "out_channels": (config.get("out_channels") or config["in_channels"]) // 4,
            "vec_in_dim": config["pooled_projection_dim"], "context_in_dim": config["joint_attention_dim"],
            "hidden_size": heads * head_dim, "mlp_ratio": 4.0, "num_heads": heads, "depth": config["num_layers"],
            "depth_single_blocks": config["num_single_layers"], "axes_dim": list(config["axes_dims_rope"]),
            "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": bool(config["guidance_embeds"]),
        }


LAYOUTS: dict[str, NativeLayout] = {lay.architecture: lay for lay in (WanNative(), FluxNative())}


def layout_for_model(model_base_class: str) -> NativeLayout | None:
    """The layout whose ComfyUI model_base class this is (None: an architecture MetaCanvas has no native route for)."""
    return next((lay for lay in LAYOUTS.values() if model_base_class in lay.model_base_classes), None)


def layout(architecture: str) -> NativeLayout:
    if architecture not in LAYOUTS:
        raise MetaCanvasError(
            f"MetaCanvas weights for a {architecture} backbone have no native ComfyUI route yet (it serves "
            f"{', '.join(lay.title for lay in LAYOUTS.values())}): use the pack's own route (Load MetaCanvas "
            "Backbone, Inject into Backbone, Sample Image / Sample Video)"
        )
    return LAYOUTS[architecture]

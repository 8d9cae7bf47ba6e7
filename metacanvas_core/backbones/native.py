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
        """The ComfyUI name of a diffusers transformer tensor (None: it has no counterpart)."""

    def native_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, unknown = {}, []
        for k, v in state.items():
            nk = self.native_key(k)
            (unknown.append(k) if nk is None else out.__setitem__(nk, v))
        if unknown:
            raise MetaCanvasError(
                f"the {self.title} transformer has tensors ComfyUI's model has no place for: {unknown[:4]}"
            )
        return out

    def lora_unpatchable(self, native_key: str) -> bool:
        """Whether ComfyUI's LoRA loading never reaches this tensor: ModelPatcher patches the parameters of leaf
        modules only (0.3.64 skips "random weights in non leaf modules"), e.g. Wan's per-block `modulation`."""
        return False

    @abstractmethod
    def native_config(self, config: dict) -> dict:
        """ComfyUI's unet_config for the diffusers transformer config `config`."""


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


class FluxNative(NativeLayout):
    """FLUX.1-Kontext as ComfyUI's comfy.ldm.flux.model.Flux: 2x2 latent patches as tokens (the pack's order),
    the canvas right after img_in (`post_input`), Kontext reference tokens after the generated ones. ComfyUI's own
    converter (model_detection.convert_diffusers_mmdit) renames a diffusers FLUX; the nodes use it."""

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

    def native_key(self, key: str) -> str | None:
        raise MetaCanvasError("FLUX's diffusers keys are renamed by ComfyUI's own converter "
                              "(comfy.model_detection.convert_diffusers_mmdit), inside ComfyUI")

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

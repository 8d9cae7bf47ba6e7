"""Tiny Wan 2.2 models for shapes-world clips, saved in the Wan2.2-TI2V-5B-Diffusers folder layout.

The real classes with small configs: a residual `AutoencoderKLWan` (Wan 2.2's block type) without the pixel patch
(Wan 2.1's layout) and with two spatio-temporal downsamplings compresses 4x in space and 4x in time (a 17-frame
32x32 clip, the size of the shapes world's images, is 5 latent frames of 8x8), and a
6-layer width-64 `WanTransformer3DModel` with patch (1, 1, 1) sees one token per latent pixel, so a k=3 keyframe
canvas is sparse over the 5 latent frames and each frame holds a 3x3 layout comfortably.

The DiT has one attention head of 64, not two of 32, for the reason the tiny FLUX does (world/tiny_flux.py): Wan's
3-D rotary embedding gives rows and columns 2 x (head_dim // 6) channels each, so a head of 32 left them 5 rotary
frequencies (two that turn across an 8-token grid) and a head of 64 gives them 10; the tiny FLUX's identity edits
went from 81 % to 94 % held-out preservation with that change at the same width and cost.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

from .tiny_models import CAPTION_CHANNELS

WAN_LATENT_CHANNELS = 16
WAN_VAE_SPATIAL = 4  # pixels per latent pixel across (two downsamplings, no pixel patch)
WAN_HEADS, WAN_HEAD_DIM = 1, 64
WAN_LAYERS = 6


def new_wan_vae(base_dim: int = 16, z_dim: int = WAN_LATENT_CHANNELS) -> AutoencoderKLWan:
    # Measured at 32x32: 8x compression with the 2x2 patch (the real TI2V layout) reconstructed clips too poorly to
    # score (held-out round trip 0.37 after 900 steps), 4x learns far faster; base_dim 16 keeps it at 1.4 MB.
    z = z_dim
    return AutoencoderKLWan(
        base_dim=base_dim, z_dim=z, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[True, True], is_residual=True, in_channels=3, out_channels=3, patch_size=None,
        scale_factor_spatial=WAN_VAE_SPATIAL, scale_factor_temporal=4,
        # Identity statistics until a trained VAE measures its own (as the released ones ship theirs).
        latents_mean=[0.0] * z, latents_std=[1.0] * z,
    )


def new_wan_dit(
    layers: int = WAN_LAYERS, heads: int = WAN_HEADS, latent_channels: int = WAN_LATENT_CHANNELS
) -> WanTransformer3DModel:
    """Width `heads` x 64; `latent_channels` the VAE's z_dim; text_dim the caption channels the planner's text
    connector produces."""
    dim = heads * WAN_HEAD_DIM
    return WanTransformer3DModel(
        patch_size=(1, 1, 1), num_attention_heads=heads, attention_head_dim=WAN_HEAD_DIM,
        in_channels=latent_channels, out_channels=latent_channels, text_dim=CAPTION_CHANNELS,
        freq_dim=256, ffn_dim=4 * dim, num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6, rope_max_seq_len=1024,
    )


def new_wan_scheduler() -> UniPCMultistepScheduler:
    """The scheduler Wan2.2-TI2V-5B-Diffusers ships: flow UniPC (bh2, order 2), shift 5."""
    return UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
        time_shift_type="exponential", timestep_spacing="linspace",
    )


def save_wan_pipeline_folder(
    folder: Path, transformer, vae, scheduler, max_shard_size: str = "1MB"
) -> None:
    """The diffusers WanPipeline layout of Wan2.2-TI2V-5B-Diffusers: the transformer sharded with an index (as the
    released 5B is), vae/, scheduler/, and model_index.json with expand_timesteps. No text encoder: the planner
    replaces UMT5, so the tiny folder lists none."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(folder / "transformer", max_shard_size=max_shard_size)
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "WanPipeline",
        "boundary_ratio": None,
        "expand_timesteps": True,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": [None, None],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

"""Tiny FLUX.1-Kontext models for shapes-world editing, saved in the FLUX.1-Kontext-dev diffusers folder layout.

The real classes with small configs. `AutoencoderKL` keeps FLUX's 16 latent channels, its block types and the
shift/scale convention, but with two blocks it compresses 2x (the released one has four blocks, 8x): a 32x32
image is a 16x16 latent, packed 2x2 into an 8x8 token grid, the same grid as the tiny SANA world. The
`FluxTransformer2DModel` is 2 double-stream + 4 single-stream blocks of width 64 (one head of 64; the rotary axes
16 + 24 + 24 sum to the head dim, as 16 + 56 + 56 = 128 do in the released one), text and pooled widths both the
planner connector's 64 channels, and no guidance embedding (the tiny model is not guidance-distilled).

Why one head of 64 rather than two of 32: editing copies the source, so a generated token must find the reference
token at its own (row, column), and FLUX tells positions apart only through its rotary frequencies (theta 10000,
fixed in diffusers). Two heads of 32 split as 8 + 12 + 12 left rows and columns 6 frequencies each, of which only
two turn noticeably across an 8-token grid: measured on identity edits (600 steps, batch 16, same seed), held-out
preservation 81 % with 2 x 32 against 94 % with 1 x 64 (12 frequencies per axis), same width and parameter count
(both before a CFG-batch fix; re-measured after it, 1 x 64 reaches 96.7 % in the same 600 steps).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from .tiny_models import CAPTION_CHANNELS

EDIT_IMAGE_SIZE = 32
FLUX_LATENT_CHANNELS = 16
FLUX_HEADS, FLUX_HEAD_DIM = 1, 64
FLUX_ROPE_AXES = (16, 24, 24)  # (source/generated, row, col); must sum to the head dim
FLUX_DOUBLE_LAYERS, FLUX_SINGLE_LAYERS = 2, 4


def new_flux_vae(block_out_channels: tuple[int, ...] = (32, 64)) -> AutoencoderKL:
    """Compression 2 ** (len(block_out_channels) - 1). Shift 0 and scale 1 until a trained VAE measures its own
    latent statistics (the released one ships shift 0.1159, scale 0.3611)."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels), layers_per_block=1,
        act_fn="silu", latent_channels=FLUX_LATENT_CHANNELS, norm_num_groups=16, sample_size=EDIT_IMAGE_SIZE,
        scaling_factor=1.0, shift_factor=0.0, force_upcast=True, use_quant_conv=False, use_post_quant_conv=False,
        mid_block_add_attention=True,
    )


def new_flux_dit(
    double_layers: int = FLUX_DOUBLE_LAYERS, single_layers: int = FLUX_SINGLE_LAYERS, guidance_embeds: bool = False
) -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * FLUX_LATENT_CHANNELS, out_channels=None, num_layers=double_layers,
        num_single_layers=single_layers, attention_head_dim=FLUX_HEAD_DIM, num_attention_heads=FLUX_HEADS,
        joint_attention_dim=CAPTION_CHANNELS, pooled_projection_dim=CAPTION_CHANNELS,
        # A list, as a loaded config has it, so fresh and loaded models give the same fingerprint.
        guidance_embeds=guidance_embeds, axes_dims_rope=list(FLUX_ROPE_AXES),
    )


def new_flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The scheduler FLUX.1-Kontext-dev ships: flow Euler with the token-count-dependent shift."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
        max_image_seq_len=4096, base_shift=0.5, max_shift=1.15,
    )


def save_flux_kontext_folder(folder: Path, transformer, vae, scheduler, max_shard_size: str = "1MB") -> None:
    """The diffusers FluxKontextPipeline layout of FLUX.1-Kontext-dev: the transformer sharded with an index (as the
    released one is), vae/, scheduler/, model_index.json. The planner replaces CLIP and T5, so the tiny folder
    lists none."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(folder / "transformer", max_shard_size=max_shard_size)
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    none = [None, None]
    index = {
        "_class_name": "FluxKontextPipeline",
        "feature_extractor": none,
        "image_encoder": none,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": none,
        "text_encoder_2": none,
        "tokenizer": none,
        "tokenizer_2": none,
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

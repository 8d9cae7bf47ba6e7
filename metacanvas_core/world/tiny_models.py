"""Tiny models of the real architectures for the shapes world, saved in the real checkpoints' folder layouts.

Same classes as the released checkpoints (Qwen2.5-VL, SANA DiT, DC-AE), much smaller configs: a 32x32 image is
an 8x8 grid of latent tokens, so the canvas is 8x8 (one token per latent patch, as SANA at 512 px has 16x16).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderDC, SanaTransformer2DModel
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

from ..schedulers import flow_dpm_solver
from .tokenizer import build_tokenizer

IMAGE_SIZE = 32
LATENT_CHANNELS = 16
PLANNER_HIDDEN = 128
DIT_HEADS, DIT_HEAD_DIM = 2, 32
DIT_LAYERS = 6
CAPTION_CHANNELS = 64
VISION_PATCH = 4


def planner_config(tokenizer) -> Qwen2_5_VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    head_dim = 32
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=PLANNER_HIDDEN, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=PLANNER_HIDDEN // head_dim, num_key_value_heads=2, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=4, in_channels=3, patch_size=VISION_PATCH,
            spatial_merge_size=2, temporal_patch_size=2, window_size=VISION_PATCH * 2 * 4,
            out_hidden_size=PLANNER_HIDDEN,
            fullatt_block_indexes=[1], tokens_per_second=2,
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def image_processor() -> Qwen2VLImageProcessorPil:
    """Qwen's own processor (its PIL backend: no torchvision on CPU machines), scaled to the tiny vision patch.

    Its pixel limit is the 32x32 the tiny planner was trained on: Qwen's `smart_resize` scales larger images and
    frames down to it (at 64x64 the planner read four times the patches, each a quarter of what it learnt, and
    captioned nothing), as a released Qwen2.5-VL folder's limits scale for it."""
    return Qwen2VLImageProcessorPil(
        patch_size=VISION_PATCH, merge_size=2, temporal_patch_size=2,
        min_pixels=(VISION_PATCH * 2) ** 2, max_pixels=IMAGE_SIZE * IMAGE_SIZE,
    )


def new_planner(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    tok = build_tokenizer()
    return Qwen2_5_VLForConditionalGeneration(planner_config(tok)), tok


def new_vae() -> AutoencoderDC:
    blocks = ("ResBlock", "ResBlock", "ResBlock")
    return AutoencoderDC(
        in_channels=3, latent_channels=LATENT_CHANNELS, attention_head_dim=8,
        encoder_block_types=blocks, decoder_block_types=blocks,
        encoder_block_out_channels=(32, 64, 64), decoder_block_out_channels=(32, 64, 64),
        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), ()), decoder_qkv_multiscales=((), (), ()),
        upsample_block_type="interpolate", downsample_block_type="Conv",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=1.0,
    )


def new_dit(
    interpolation_scale: float | None = None, heads: int = DIT_HEADS, layers: int = DIT_LAYERS
) -> SanaTransformer2DModel:
    """Released SANA has no positional embedding (interpolation_scale None); the Mix-FFN convolutions locate.
    Width is `heads` x 32."""
    return SanaTransformer2DModel(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=heads,
        attention_head_dim=DIT_HEAD_DIM, num_layers=layers, num_cross_attention_heads=heads,
        cross_attention_head_dim=DIT_HEAD_DIM, cross_attention_dim=heads * DIT_HEAD_DIM,
        caption_channels=CAPTION_CHANNELS, mlp_ratio=2.5, patch_size=1, sample_size=IMAGE_SIZE // 4,
        norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=False, interpolation_scale=interpolation_scale,
    )


def new_scheduler():
    """The scheduler the backbone folder ships: released SANA's flow DPM-Solver++ 2M, shift 3 (training draws its
    own noise levels; this is only what sampling uses by default)."""
    return flow_dpm_solver()


def save_sana_pipeline_folder(folder: Path, transformer, vae, scheduler) -> None:
    """The diffusers SanaPipeline layout; no text encoder since the planner replaces it."""
    folder.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "SanaPipeline",
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "transformer": ["diffusers", "SanaTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderDC"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_planner_folder(folder: Path, model, tokenizer) -> None:
    """The Qwen2.5-VL-*-Instruct layout: config, safetensors, tokenizer files, preprocessor config."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    image_processor().save_pretrained(folder)
    # Name the processor as released Qwen2.5-VL folders do; transformers picks the backend at load time.
    cfg_path = folder / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["image_processor_type"] = "Qwen2VLImageProcessor"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")

"""Loaders accept the layouts real checkpoints come in: tiny replicas written with the real configs' keys."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

from metacanvas_core.backbones import load_backbone
from metacanvas_core.canvas_grid import CanvasGrid
from metacanvas_core.checkpoints import MetaCanvasWeights
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.plan import CanvasPlan
from metacanvas_core.planner import Planner
from metacanvas_core.sampling import InjectedBackbone, sample
from metacanvas_core.world.tokenizer import build_tokenizer

# The shared folder sits beside the repository (here and in CI).
REF = Path(__file__).resolve().parents[2] / "shared" / "reference-configs"
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason=f"reference configs not found at {REF}")


def _tiny_qwen_flat_config(tok) -> dict:
    """The released 7B config.json (old flat layout, no text_config) with every size made tiny."""
    cfg = json.loads((REF / "Qwen--Qwen2.5-VL-7B-Instruct" / "config.json").read_text())
    ids = tok.convert_tokens_to_ids
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=256, max_window_layers=2,
               bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
               vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
               vision_token_id=ids("<|vision_pad|>"), image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"))
    cfg["rope_scaling"] = {"type": "mrope", "mrope_section": [4, 6, 6]}
    cfg["vision_config"].update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                fullatt_block_indexes=[1], window_size=32, patch_size=4)
    return cfg


def test_planner_loads_the_released_qwen_layout(tmp_path):
    assert "text_config" not in json.loads((REF / "Qwen--Qwen2.5-VL-7B-Instruct" / "config.json").read_text())
    tok = build_tokenizer()
    (tmp_path / "config.json").write_text(json.dumps(_tiny_qwen_flat_config(tok)))
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(tmp_path))
    # Released shards use the old key names (model.layers.*, visual.*) split over several files with an index.
    old = {}
    for k, v in model.state_dict().items():
        k = k.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        old[k] = v.contiguous()
    if model.config.tie_word_embeddings:
        old.pop("lm_head.weight", None)
    keys = sorted(old)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: old[k] for k in ks}, str(tmp_path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in ks})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    tok.save_pretrained(tmp_path)
    shutil.copy(REF / "Qwen--Qwen2.5-VL-7B-Instruct" / "preprocessor_config.json", tmp_path)

    planner = Planner.from_pretrained(tmp_path)
    assert planner.hidden_size == 64
    loaded = planner.model.state_dict()
    assert torch.equal(loaded["model.language_model.layers.0.self_attn.q_proj.weight"],
                       model.state_dict()["model.language_model.layers.0.self_attn.q_proj.weight"])
    out = planner.encode(["a red circle"], torch.zeros(4, 64), CanvasGrid(1, 2, 2))
    assert out.canvas_states.shape == (1, 4, 64) and torch.isfinite(out.canvas_states).all()


def _tiny(cfg: dict, **sizes) -> dict:
    out = {k: v for k, v in cfg.items()}
    out.update(sizes)
    return out


def test_backbone_loads_a_sana_pipeline_folder_with_real_keys(tmp_path):
    src = REF / "Efficient-Large-Model--Sana_1600M_512px_diffusers"
    t = json.loads((src / "transformer" / "config.reconstructed.json").read_text())
    t = _tiny(t, num_attention_heads=2, attention_head_dim=16, num_layers=2, num_cross_attention_heads=2,
              cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=48, in_channels=8,
              out_channels=8, sample_size=8)
    v = json.loads((src / "vae" / "config.reconstructed.json").read_text())
    v = _tiny(v, encoder_block_out_channels=[8, 16], decoder_block_out_channels=[8, 16],
              encoder_block_types=["ResBlock", "EfficientViTBlock"], decoder_block_types=["ResBlock", "EfficientViTBlock"],
              encoder_layers_per_block=[1, 1], decoder_layers_per_block=[1, 1], encoder_qkv_multiscales=[[], [5]],
              decoder_qkv_multiscales=[[], [5]], latent_channels=8, attention_head_dim=8)
    for sub, cfg in (("transformer", t), ("vae", v)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "scheduler").mkdir()
    shutil.copy(src / "scheduler" / "scheduler_config.reconstructed.json", tmp_path / "scheduler" / "scheduler_config.json")
    shutil.copy(src / "model_index.partial.json", tmp_path / "model_index.json")
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    torch.manual_seed(0)
    SanaTransformer2DModel.from_config(t).save_pretrained(tmp_path / "transformer")
    AutoencoderDC.from_config(v).save_pretrained(tmp_path / "vae")

    bb = load_backbone(tmp_path)  # the pipeline's Gemma text encoder is listed but never needed
    assert type(bb.scheduler).__name__ == "DPMSolverMultistepScheduler" and bb.pixels_per_token == 2
    conn = MetaCanvasConnector(ConnectorConfig(32, bb.dit_dim, bb.caption_channels, [1, 4, 4]))
    plan_like = CanvasPlan(
        ["x"], torch.randn(1, 3, 48), torch.ones(1, 3, dtype=torch.long),
        conn.canvas_encoder(torch.randn(1, 16, 32)), "replica")
    text_only = dataclasses.replace(plan_like, canvas=None)
    plain = sample(InjectedBackbone(bb), text_only, width=16, height=16, steps=3, cfg=1.0, seed=1)
    loaded = MetaCanvasWeights(conn, "sana", "replica", backbone_config=bb.fingerprint())
    injected = sample(InjectedBackbone(bb).inject(loaded), plan_like, width=16, height=16, steps=3, cfg=1.0, seed=1)
    assert torch.equal(plain, injected)  # untrained connector: the real scheduler path is untouched


def test_builtin_sana_folders_ship_the_released_scheduler():
    """The tiny replicas sample as released SANA does: the same scheduler class and every setting of its config."""
    from metacanvas_core.builtin import ASSETS

    ref = json.loads((REF / "Efficient-Large-Model--Sana_1600M_512px_diffusers" / "scheduler" /
                      "scheduler_config.reconstructed.json").read_text())
    for name in ("sana_t2i", "sana_t2i_posemb"):
        folder = ASSETS / name
        ours = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        assert {k: ours.get(k) for k in ref if k != "_diffusers_version"} == {
            k: v for k, v in ref.items() if k != "_diffusers_version"}, name
        assert json.loads((folder / "model_index.json").read_text())["scheduler"][1] == ref["_class_name"]
        assert type(load_backbone(folder).scheduler).__name__ == ref["_class_name"]

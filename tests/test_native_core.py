"""The native route's ComfyUI-free parts: key names, noise levels, CONDITIONING, and the nodes' answer without
ComfyUI. (The route itself, in a real ComfyUI, is tests/test_native_comfyui.py, opt-in.)"""

from __future__ import annotations

import pytest
import torch

from metacanvas_core.backbones.native import LAYOUTS, layout, layout_for_model
from metacanvas_core.builtin import ASSETS
from metacanvas_core.errors import MetaCanvasError

WAN = LAYOUTS["wan"]

# ComfyUI's comfy.ldm.wan.model.WanModel names for a one-block model (read from a real instance, ComfyUI 0.3.64)
COMFY_WAN_KEYS = {
    "patch_embedding.weight", "patch_embedding.bias", "text_embedding.0.weight", "text_embedding.0.bias",
    "text_embedding.2.weight", "text_embedding.2.bias", "time_embedding.0.weight", "time_embedding.0.bias",
    "time_embedding.2.weight", "time_embedding.2.bias", "time_projection.1.weight", "time_projection.1.bias",
    "blocks.0.modulation", "blocks.0.norm3.weight", "blocks.0.norm3.bias", "blocks.0.ffn.0.weight",
    "blocks.0.ffn.0.bias", "blocks.0.ffn.2.weight", "blocks.0.ffn.2.bias", "head.modulation", "head.head.weight",
    "head.head.bias",
    *(f"blocks.0.{a}.{p}.{w}" for a in ("self_attn", "cross_attn") for p in "qkvo" for w in ("weight", "bias")),
    *(f"blocks.0.{a}.norm_{p}.weight" for a in ("self_attn", "cross_attn") for p in "qk"),
}


def test_every_diffusers_wan_tensor_has_its_comfyui_name():
    from diffusers import WanTransformer3DModel

    cfg = WanTransformer3DModel.load_config(ASSETS / "wan_t2v" / "transformer")
    model = WanTransformer3DModel.from_config({**cfg, "num_layers": 1})
    state = model.state_dict()
    native = WAN.native_state_dict(state)
    assert set(native) == COMFY_WAN_KEYS and len(native) == len(state)
    assert native["head.modulation"] is state["scale_shift_table"]
    with pytest.raises(MetaCanvasError, match="no place for"):
        WAN.native_state_dict({"something.else": torch.zeros(1)})


def test_the_native_config_is_the_tiny_wans_own():
    import json

    cfg = json.loads((ASSETS / "wan_t2v" / "transformer" / "config.json").read_text())
    unet = WAN.native_config(cfg)
    assert unet["patch_size"] == (1, 1, 1) and unet["dim"] == 64 and unet["num_heads"] == 2
    assert unet["text_dim"] == cfg["text_dim"] and unet["in_dim"] == unet["out_dim"] == 16


def test_noise_levels_per_frame_say_which_frames_are_given():
    t = torch.tensor([[0.0, 500.0, 500.0], [250.0, 250.0, 250.0]])  # ComfyUI's Wan 2.2 per-frame timesteps
    level, clean = WAN.noise_levels(t, 2, 3, multiplier=1000.0)
    assert level.tolist() == [500.0, 250.0]
    assert clean.tolist() == [[True, False, False], [False, False, False]]
    level, clean = WAN.noise_levels(torch.tensor([0.5]), 2, 3, multiplier=1.0)  # one per sample, sigma scale
    assert level.tolist() == [500.0, 500.0] and not clean.any()


def test_layouts_by_architecture_and_by_comfyui_model_class():
    assert layout("wan") is WAN and layout_for_model("WAN22") is WAN and layout_for_model("Flux") is LAYOUTS["flux"]
    assert layout_for_model("SD3") is None
    with pytest.raises(MetaCanvasError, match="no native ComfyUI route yet.*use the pack's own route"):
        layout("sana")


@pytest.fixture(scope="module")
def t2v():
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan
    from metacanvas_core.planner import Planner

    weights = load_connector(ASSETS / "metacanvas_t2v.safetensors")
    plan = make_plan(Planner.from_pretrained(ASSETS / "planner"), weights, ["a red circle"], with_unconditional=True)
    return weights, plan


def test_plan_to_conditioning_without_comfyui(t2v):
    from metacanvas_core.native import PLAN_KEY
    from nodes.native import MetaCanvasPlanToConditioning

    weights, plan = t2v
    pos, neg = MetaCanvasPlanToConditioning().convert(weights, plan)
    (pt, pd), (nt, nd) = pos[0], neg[0]
    assert pd[PLAN_KEY] is plan and nd[PLAN_KEY] is plan.unconditional
    length = max(plan.text.shape[1], plan.unconditional.text.shape[1])
    assert pt.shape == nt.shape == (1, length, weights.config.caption_channels)
    n = plan.unconditional.text.shape[1]
    assert torch.equal(nt[:, :n], plan.unconditional.text * plan.unconditional.text_mask[..., None])
    assert not nt[:, n:].any()  # padded with zeros, as the pack's CFG batch pads


def test_the_model_nodes_say_they_need_comfyui(t2v, monkeypatch):
    import builtins

    from nodes.comfy import NodeError
    from nodes.native import MetaCanvasApplyToModel, MetaCanvasNativeBackboneLoader

    real = builtins.__import__

    def no_comfy(name, *a, **k):
        if name == "comfy" or name.startswith("comfy."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_comfy)
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: .*needs ComfyUI.*Sample Image / Sample Video"):
        MetaCanvasApplyToModel().apply(object(), t2v[0], 1.0)
    with pytest.raises(NodeError, match=r"^Load Native Backbone \(MetaCanvas\): .*needs ComfyUI"):
        MetaCanvasNativeBackboneLoader().load("built-in tiny: wan_t2v")


def test_the_native_canvas_adds_what_the_packs_hook_adds(t2v):
    """The same residual as injection.canvas_injected on a diffusers Wan's patch embedding, token for token."""
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.injection import canvas_injected
    from metacanvas_core.native import NativeCanvas

    weights, plan = t2v
    bb = load_backbone(ASSETS / "wan_t2v")
    torch.manual_seed(0)
    x = torch.randn(1, 16, 5, 8, 8)
    grid = (5, 8, 8)
    canvas = weights.connector.canvas_for_grid(plan.canvas, *grid)
    with torch.no_grad():
        plain = bb.patch_embed(x)
        bb.transformer.config  # noqa: B018
        with canvas_injected(bb, weights.connector.canvas_fuser, canvas, grid, 0.7, clean_frames=1):
            # the hook reads the timestep the transformer was called with; give it one as the Wan adapter does
            from diffusers.hooks import HookRegistry

            HookRegistry.check_if_exists_or_initialize(bb.transformer).get_hook("metacanvas_timestep").state[
                "timestep"] = bb._model_timestep(torch.tensor([600.0]), x, 1)
            hooked = bb.patch_embed(x)
    want = hooked.flatten(2).transpose(1, 2)
    native = NativeCanvas(weights, 0.7, layout("wan"))
    step = native.step([plan], 1, tuple(x.shape), (1, 1, 1), torch.tensor([[0.0, 600, 600, 600, 600]]), 1000.0, "cpu")
    got = native.add(plain.flatten(2).transpose(1, 2), step)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(got[:, :64], plain.flatten(2).transpose(1, 2)[:, :64])  # the given frame is untouched


def test_convert_comfy_writes_a_peft_dit_lora_in_comfyuis_keys(t2v, tmp_path):
    import dataclasses

    from safetensors.torch import load_file, save_file

    from metacanvas_core.checkpoints import DitPart
    from metacanvas_core.comfy_export import convert

    weights, _ = t2v
    lora = tmp_path / "x_dit_lora.safetensors"
    a, b = torch.randn(4, 64), torch.randn(64, 4)
    save_file({"transformer.blocks.2.attn2.to_out.0.lora_A.weight": a,
               "transformer.blocks.2.attn2.to_out.0.lora_B.weight": b}, str(lora))
    as_lora = dataclasses.replace(weights, dit=DitPart("lora", lora), _placed={})
    out = tmp_path / "out.safetensors"
    convert(as_lora, ASSETS / "wan_t2v" / "transformer", out)
    got = load_file(str(out))
    assert set(got) == {f"diffusion_model.blocks.2.cross_attn.o.{k}" for k in
                        ("lora_down.weight", "lora_up.weight", "alpha")}
    assert torch.equal(got["diffusion_model.blocks.2.cross_attn.o.lora_down.weight"], a)
    assert got["diffusion_model.blocks.2.cross_attn.o.alpha"].item() == 4.0
    # the whole DiT: base + B A merged into ComfyUI's names
    whole = tmp_path / "whole.safetensors"
    convert(as_lora, ASSETS / "wan_t2v" / "transformer", whole, "diffusion_models")
    from metacanvas_core.comfy_export import _read_folder

    base = _read_folder(ASSETS / "wan_t2v" / "transformer")
    merged = load_file(str(whole))["blocks.2.cross_attn.o.weight"].float()
    want = base["blocks.2.attn2.to_out.0.weight"].float() + b @ a
    assert torch.allclose(merged, want.to(base["blocks.2.attn2.to_out.0.weight"].dtype).float())


def test_convert_comfy_from_the_command_line(tmp_path, capsys):
    from safetensors.torch import load_file

    from metacanvas_core.__main__ import main

    out = tmp_path / "t2v_lora.safetensors"
    assert main(["convert-comfy", str(ASSETS / "metacanvas_t2v.safetensors"), "--base", str(ASSETS / "wan_t2v"),
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "lora from the transformer DiT part of 'metacanvas_t2v'" in said and "--format diffusion_models" in said
    keys = load_file(str(out))
    assert keys and all(k.startswith("diffusion_model.") and k.endswith((".diff", ".diff_b")) for k in keys)
    assert main(["convert-comfy", str(ASSETS / "metacanvas_t2i.safetensors"), "--base", str(ASSETS / "sana_t2i"),
                 "--out", str(tmp_path / "x.safetensors")]) == 2  # SANA: no native ComfyUI model
    assert "no native ComfyUI route" in capsys.readouterr().err


def test_flux_conditioning_carries_the_packs_pooled_vector_and_no_padding():
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan
    from metacanvas_core.planner import Planner
    from nodes.native import MetaCanvasPlanToConditioning

    weights = load_connector(ASSETS / "metacanvas_edit.safetensors")
    plan = make_plan(Planner.from_pretrained(ASSETS / "planner"), weights, ["make the red circle green"],
                     with_unconditional=True)
    pos, neg = MetaCanvasPlanToConditioning().convert(weights, plan)
    bb = load_backbone(ASSETS / "flux_edit")
    for (text, extra), p in ((pos[0], plan), (neg[0], plan.unconditional)):
        assert text.shape[1] == p.text.shape[1]  # each its own length: FLUX would attend to padding
        assert torch.allclose(extra["pooled_output"], bb.pooled(p.text, p.text_mask))
        assert extra["guidance"] == 2.5

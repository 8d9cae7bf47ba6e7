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
    assert unet["patch_size"] == (1, 1, 1) and unet["dim"] == 128 and unet["num_heads"] == 2  # 2 heads of 64
    assert unet["text_dim"] == cfg["text_dim"] and unet["in_dim"] == unet["out_dim"] == 48  # the clip VAE's z_dim


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
    x = torch.randn(1, bb.transformer.config.in_channels, 5, 8, 8)
    grid = (5, 8, 8)
    canvas = weights.connector.canvas_for_grid(plan.canvas, *grid)
    with torch.no_grad():
        plain = bb.patch_embed(x)
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
    width = 128  # the tiny Wan's: 2 heads of 64
    a, b = torch.randn(4, width), torch.randn(width, 4)
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


# ComfyUI's comfy.ldm.flux.model.Flux for the tiny flux_edit DiT (2 double, 4 single blocks; width 64, 2 heads of
# 32, mlp 256), as comfy.utils.flux_to_diffusers names them (read from ComfyUI 0.3.64), with their shapes
FLUX = LAYOUTS["flux"]
_DOUBLE = {
    "img_attn.qkv.weight": (192, 64), "img_attn.qkv.bias": (192,), "txt_attn.qkv.weight": (192, 64),
    "txt_attn.qkv.bias": (192,), "img_attn.proj.weight": (64, 64), "img_attn.proj.bias": (64,),
    "txt_attn.proj.weight": (64, 64), "txt_attn.proj.bias": (64,), "img_mod.lin.weight": (384, 64),
    "img_mod.lin.bias": (384,), "txt_mod.lin.weight": (384, 64), "txt_mod.lin.bias": (384,),
    "img_mlp.0.weight": (256, 64), "img_mlp.0.bias": (256,), "img_mlp.2.weight": (64, 256), "img_mlp.2.bias": (64,),
    "txt_mlp.0.weight": (256, 64), "txt_mlp.0.bias": (256,), "txt_mlp.2.weight": (64, 256), "txt_mlp.2.bias": (64,),
    "img_attn.norm.query_norm.scale": (32,), "img_attn.norm.key_norm.scale": (32,),
    "txt_attn.norm.query_norm.scale": (32,), "txt_attn.norm.key_norm.scale": (32,),
}
_SINGLE = {
    "linear1.weight": (64 * 3 + 256, 64), "linear1.bias": (64 * 3 + 256,), "linear2.weight": (64, 64 + 256),
    "linear2.bias": (64,), "modulation.lin.weight": (192, 64), "modulation.lin.bias": (192,),
    "norm.query_norm.scale": (32,), "norm.key_norm.scale": (32,),
}
COMFY_FLUX_SHAPES = {
    **{f"double_blocks.{i}.{k}": s for i in range(2) for k, s in _DOUBLE.items()},
    **{f"single_blocks.{i}.{k}": s for i in range(4) for k, s in _SINGLE.items()},
    **{f"{m}.{w}": s for m in ("img_in", "txt_in") for w, s in (("weight", (64, 64)), ("bias", (64,)))},
    "time_in.in_layer.weight": (64, 256), "time_in.in_layer.bias": (64,), "time_in.out_layer.weight": (64, 64),
    "time_in.out_layer.bias": (64,), "vector_in.in_layer.weight": (64, 64), "vector_in.in_layer.bias": (64,),
    "vector_in.out_layer.weight": (64, 64), "vector_in.out_layer.bias": (64,),
    "final_layer.linear.weight": (64, 64), "final_layer.linear.bias": (64,),
    "final_layer.adaLN_modulation.1.weight": (128, 64), "final_layer.adaLN_modulation.1.bias": (128,),
}


def test_every_diffusers_flux_tensor_has_exactly_one_place_in_comfyuis_flux_and_comes_back():
    from metacanvas_core.backbones.native import swap_halves
    from metacanvas_core.comfy_export import _read_folder

    state = _read_folder(ASSETS / "flux_edit" / "transformer")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    slots = FLUX.native_slots(shapes)
    assert set(slots) == set(state)  # every diffusers tensor has a place ...
    rows: dict[str, list[tuple[int, int]]] = {}
    for nk, row, n, _ in slots.values():
        rows.setdefault(nk, []).append((row, n))
    for nk, spans in rows.items():  # ... and the places tile each ComfyUI tensor's rows exactly once
        spans.sort()
        assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
        assert spans[-1][0] + spans[-1][1] == COMFY_FLUX_SHAPES[nk][0]
    native = FLUX.native_state_dict(state)
    assert {k: tuple(v.shape) for k, v in native.items()} == COMFY_FLUX_SHAPES
    qkv = native["double_blocks.1.img_attn.qkv.weight"]
    assert torch.equal(qkv[64:128], state["transformer_blocks.1.attn.to_k.weight"])
    assert torch.equal(native["single_blocks.3.linear1.bias"][192:], state["single_transformer_blocks.3.proj_mlp.bias"])
    assert torch.equal(native["final_layer.adaLN_modulation.1.weight"], swap_halves(state["norm_out.linear.weight"]))
    back = FLUX.diffusers_state_dict(native, shapes)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(MetaCanvasError, match="fused from 3 tensors"):
        FLUX.native_state_dict({k: v for k, v in state.items() if k != "transformer_blocks.0.attn.add_v_proj.weight"})


def test_convert_comfy_writes_a_flux_lora_of_fused_weights_block_diagonally(tmp_path):
    import dataclasses

    from safetensors.torch import load_file, save_file

    from metacanvas_core.checkpoints import DitPart, load_connector
    from metacanvas_core.comfy_export import _read_folder, convert

    weights = load_connector(ASSETS / "metacanvas_edit.safetensors")
    base_dir = ASSETS / "flux_edit" / "transformer"
    torch.manual_seed(0)
    mods = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v", "single_transformer_blocks.1.attn.to_k",
            "single_transformer_blocks.1.proj_mlp", "transformer_blocks.1.attn.to_out.0", "norm_out.linear"]
    outs = {"single_transformer_blocks.1.proj_mlp": 256, "norm_out.linear": 128}
    pairs = {m: (torch.randn(4, 64), torch.randn(outs.get(m, 64), 4)) for m in mods}
    lora = tmp_path / "x_dit_lora.safetensors"
    save_file({f"transformer.{m}.lora_{n}.weight": t for m, (a, b) in pairs.items() for n, t in zip("AB", (a, b))},
              str(lora))
    as_lora = dataclasses.replace(weights, dit=DitPart("lora", lora), _placed={})
    convert(as_lora, base_dir, tmp_path / "lora.safetensors")
    got = load_file(str(tmp_path / "lora.safetensors"))
    names = {k.rsplit(".lora_", 1)[0].removesuffix(".alpha") for k in got}
    assert names == {f"diffusion_model.{n}" for n in ("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1",
                                                       "double_blocks.1.img_attn.proj", "final_layer.adaLN_modulation.1")}
    qkv = "diffusion_model.double_blocks.0.img_attn.qkv"
    assert got[f"{qkv}.lora_down.weight"].shape == (8, 64) and got[f"{qkv}.alpha"].item() == 8.0  # rank 4 + 4
    # ComfyUI's patch (alpha / rank = 1): up @ down, the parts' B A in their rows of the fused weight, zero elsewhere
    base = _read_folder(base_dir)
    tuned = dict(base)
    for m, (a, b) in pairs.items():
        tuned[m + ".weight"] = base[m + ".weight"].float() + b @ a
    want = {k: t.float() for k, t in FLUX.native_state_dict(tuned).items()}
    have = {k: t.float() for k, t in FLUX.native_state_dict(base).items()}
    for n in names:
        k = n.removeprefix("diffusion_model.") + ".weight"
        patched = have[k] + got[f"{n}.lora_up.weight"] @ got[f"{n}.lora_down.weight"]
        assert torch.allclose(patched, want[k], atol=1e-5), k
    # the whole DiT: the same merge, in ComfyUI's names
    convert(as_lora, base_dir, tmp_path / "whole.safetensors", "diffusion_models")
    whole = load_file(str(tmp_path / "whole.safetensors"))
    assert set(whole) == set(COMFY_FLUX_SHAPES)
    assert torch.allclose(whole["single_blocks.1.linear1.weight"].float(), want["single_blocks.1.linear1.weight"],
                          atol=1e-2)  # the base's float16


def test_convert_comfy_writes_a_flux_fine_tune_as_diffs_of_comfyuis_weights(tmp_path):
    from safetensors.torch import load_file

    from metacanvas_core.__main__ import main
    from metacanvas_core.comfy_export import _read_folder

    out = tmp_path / "edit_lora.safetensors"
    assert main(["convert-comfy", str(ASSETS / "metacanvas_edit.safetensors"), "--base", str(ASSETS / "flux_edit"),
                 "--out", str(out)]) == 0
    diffs = load_file(str(out))
    assert diffs and all(k.endswith((".diff", ".diff_b")) for k in diffs)
    base = FLUX.native_state_dict(_read_folder(ASSETS / "flux_edit" / "transformer"))
    tuned = FLUX.native_state_dict(_read_folder(ASSETS / "metacanvas_edit_dit"))
    for nk in tuned:
        name = "diffusion_model." + nk.removesuffix(".weight").removesuffix(".bias")
        key = name + (".diff_b" if nk.endswith(".bias") else ".diff")
        delta = tuned[nk].float() - base[nk].float()
        assert torch.equal(diffs[key], delta) if delta.any() else key not in diffs

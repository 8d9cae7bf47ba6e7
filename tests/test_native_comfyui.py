"""The native route in a real ComfyUI (opt-in: METACANVAS_COMFYUI=/path/to/ComfyUI, see comfyui_env.py).

Proof of equivalence: the same weights, noise, sigmas and sampler (Euler, the diffusers FlowMatchEuler sigmas at
shift 5) through ComfyUI's own sampler on ComfyUI's own Wan model with Apply MetaCanvas to MODEL give the pack's
Sample Video latents within TOLERANCE (float32 on the CPU; measured about 2e-5 on latents of magnitude ~3.5: the
two Wan implementations differ in summation order, e.g. the sinusoidal embedding and attention kernels). A
zero-initialised canvas connector leaves the native model's output bit for bit; a LoRA applied before or after the
patch stays in effect.
"""

from __future__ import annotations

import copy

import pytest
import torch

from comfyui_env import comfyui_or_skip

TOLERANCE = 1e-3  # max abs difference of normalised latents (and of decoded pixels in 0..1)
STEPS, CFG, SEED = 4, 3.0, 0
PROMPT = "a red circle moves from left to right"


@pytest.fixture(scope="module")
def comfy():
    return comfyui_or_skip()


@pytest.fixture(scope="module")
def world(comfy):
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.builtin import ASSETS
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan
    from metacanvas_core.planner import Planner

    weights = load_connector(ASSETS / "metacanvas_t2v.safetensors")
    planner = Planner.from_pretrained(ASSETS / "planner")
    plan = make_plan(planner, weights, [PROMPT], with_unconditional=True)
    return {"assets": ASSETS, "weights": weights, "planner": planner, "plan": plan,
            "backbone": load_backbone(ASSETS / "wan_t2v")}


@pytest.fixture(scope="module")
def native(comfy, world):
    from nodes.native import MetaCanvasNativeBackboneLoader

    return MetaCanvasNativeBackboneLoader().load("built-in tiny: wan_t2v", "built-in tiny: metacanvas_t2v")


def _sigmas(backbone):
    from metacanvas_core.schedulers import make_scheduler

    s = make_scheduler(backbone.scheduler, "euler", shift=5.0)
    s.set_timesteps(STEPS)
    return s.sigmas.float()


def _pack(world, strength=1.0, cfg=CFG, conditioning=None, frames=17):
    from metacanvas_core.sampling import InjectedBackbone, sample
    from metacanvas_core.schedulers import make_scheduler

    bb = world["backbone"]
    return sample(InjectedBackbone(bb).inject(world["weights"], strength), world["plan"], width=32, height=32,
                  frames=frames, steps=STEPS, cfg=cfg, seed=SEED, conditioning=conditioning,
                  scheduler=make_scheduler(bb.scheduler, "euler", shift=5.0))


def _native(comfy, model, world, latent, cfg=CFG, noise_mask=None, weights=None, plan=None):
    import comfy.sample
    import comfy.samplers

    from metacanvas_core.sampling import initial_noise
    from nodes.native import MetaCanvasPlanToConditioning

    pos, neg = MetaCanvasPlanToConditioning().convert(weights or world["weights"], plan or world["plan"])
    noise = initial_noise(tuple(latent.shape), SEED)
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.ksampler("euler"), _sigmas(world["backbone"]),
                                      pos, neg, latent, noise_mask=noise_mask, seed=SEED, disable_pbar=True)


def _apply(model, weights, strength=1.0):
    from nodes.native import MetaCanvasApplyToModel

    return MetaCanvasApplyToModel().apply(model, weights, strength)[0]


def _empty(vae, start_image=None):
    from nodes.native import MetaCanvasNativeVideoLatent

    return MetaCanvasNativeVideoLatent().make(vae, 32, 32, 17, 1, start_image)[0]


def test_text_to_video_matches_the_packs_sample_video(comfy, world, native):
    model, vae = native
    want = _pack(world)
    latent = _empty(vae)["samples"]
    got = _native(comfy, _apply(model, world["weights"]), world, latent)
    norm = model.model.process_latent_in(got)
    assert norm.shape == want.shape
    assert (norm - want).abs().max().item() < TOLERANCE
    # the canvas acts (the check above is not plain against plain)
    plain = _native(comfy, model, world, latent)
    assert (plain - got).abs().max().item() > 100 * TOLERANCE
    # decoded through ComfyUI's VAE object, as VAEDecode does, against the pack's decode
    from metacanvas_core.sampling import latents_to_images

    pixels = vae.decode(got).reshape(-1, 32, 32, 3)
    assert (pixels - latents_to_images(world["backbone"], want)).abs().max().item() < TOLERANCE


def test_image_to_video_keeps_the_start_frame_clean_and_matches_the_pack(comfy, world, native):
    from metacanvas_core.backbones.base import Conditioning

    model, vae = native
    torch.manual_seed(0)
    image = torch.rand(1, 32, 32, 3)
    bb = world["backbone"]
    first = bb.encode(image.movedim(-1, 1) * 2 - 1)
    want = _pack(world, conditioning=Conditioning(first_frames=first))
    latent = _empty(vae, image)
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0, 1, 1, 1, 1]
    got = _native(comfy, _apply(model, world["weights"]), world, latent["samples"], noise_mask=latent["noise_mask"])
    norm = model.model.process_latent_in(got)
    assert (norm - want).abs().max().item() < TOLERANCE
    assert (norm[:, :, :1] - first).abs().max().item() < TOLERANCE  # the start frame comes back as it went in


def _zero_weights(weights):
    zero = copy.deepcopy(weights)
    for p in zero.connector.canvas_fuser.proj.parameters():
        torch.nn.init.zeros_(p)
    return zero


def test_a_zero_initialised_connector_gives_the_plain_native_output_bit_for_bit(comfy, world, native):
    model, vae = native
    zero = _zero_weights(world["weights"])
    latent = _empty(vae)["samples"]
    plain = _native(comfy, model, world, latent)
    assert torch.equal(_native(comfy, _apply(model, zero), world, latent), plain)


def _lora(model):
    """A LoRA on one attention projection of ComfyUI's Wan, loaded the way LoraLoaderModelOnly loads one."""
    import comfy.lora

    torch.manual_seed(5)
    key = "diffusion_model.blocks.0.self_attn.q"
    out_features, in_features = model.model.diffusion_model.blocks[0].self_attn.q.weight.shape  # the tiny Wan's width
    lora = {f"{key}.lora_up.weight": torch.randn(out_features, 4) * 0.5,
            f"{key}.lora_down.weight": torch.randn(4, in_features) * 0.5}
    loaded = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(model.model, {}))
    out = model.clone()
    assert out.add_patches(loaded, 1.0)
    return out


def test_a_lora_before_or_after_the_patch_is_kept(comfy, world, native):
    model, vae = native
    latent = _empty(vae)["samples"]
    weights = world["weights"]
    without = _native(comfy, _apply(model, weights), world, latent)
    before = _native(comfy, _apply(_lora(model), weights), world, latent)
    after = _native(comfy, _lora(_apply(model, weights)), world, latent)
    assert (before - without).abs().max().item() > 1e-2  # the LoRA acts
    assert torch.equal(before, after)


def test_the_loaded_model_is_never_modified_and_an_earlier_replace_is_chained(comfy, world, native):
    model, vae = native
    calls = []

    def earlier(args, extra):
        calls.append(args["img"].shape)
        return extra["original_block"](args)

    base = model.clone()
    base.set_model_patch_replace(earlier, "dit", "double_block", 0)
    patched = _apply(base, world["weights"])
    assert "patches_replace" not in model.model_options["transformer_options"]
    assert base.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)] is earlier
    _native(comfy, patched, world, _empty(vae)["samples"])
    assert len(calls) == STEPS  # CFG's two halves share one batched call per step


def test_the_connector_is_loaded_and_offloaded_by_comfyuis_model_management(comfy, world, native):
    model, _ = native
    patched = _apply(model, world["weights"])
    extra = patched.model_patches_models()
    assert len(extra) == 1 and extra[0].model_size() > 0
    import comfy.model_management as mm

    mm.load_models_gpu([patched])
    assert any(m.model is extra[0] for m in mm.current_loaded_models)


# -- bad input: node errors naming the node and the fix --------------------------------------------------------


def test_weights_of_another_architecture_are_refused(comfy, world, native):
    from metacanvas_core.checkpoints import load_connector
    from nodes.comfy import NodeError

    model, _ = native
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: .*sana.*use the pack's own route"):
        _apply(model, load_connector(world["assets"] / "metacanvas_t2i.safetensors"))
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: .*trained for FLUX.1-Kontext, but the MODEL is "
                                        r"Wan 2.2 .*load a FLUX.1-Kontext model"):
        _apply(model, load_connector(world["assets"] / "metacanvas_edit.safetensors"))


def _tiny_flux_model(comfy):
    import comfy.model_patcher
    import comfy.supported_models

    cfg = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 64, "context_in_dim": 64,
           "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
           "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": False}
    mc = comfy.supported_models.Flux(cfg)
    mc.set_inference_dtype(torch.float32, None)
    return comfy.model_patcher.ModelPatcher(mc.get_model({}), torch.device("cpu"), torch.device("cpu"))


def test_a_model_of_another_architecture_is_refused(comfy, world):
    import comfy.model_patcher
    import comfy.supported_models

    from nodes.comfy import NodeError

    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: .*trained for Wan 2.2, but the MODEL is "
                                        r"FLUX.1-Kontext \(Flux\): load a Wan 2.2 model"):
        _apply(_tiny_flux_model(comfy), world["weights"])
    mc = comfy.supported_models.SD3({"in_channels": 16, "pos_embed_scaling_factor": None, "depth": 1,
                                     "patch_size": 2, "adm_in_channels": 64, "context_embedder_config": {
                                         "target": "torch.nn.Linear", "params": {"in_features": 64,
                                                                                 "out_features": 64}}})
    mc.set_inference_dtype(torch.float32, None)
    sd3 = comfy.model_patcher.ModelPatcher(mc.get_model({}), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: the MODEL is a SD3 model, which MetaCanvas "
                                        r"has no native route for"):
        _apply(sd3, world["weights"])


def test_a_native_model_of_another_width_or_text_width_is_refused(comfy, world, tmp_path):
    from diffusers import WanTransformer3DModel

    from nodes.comfy import NodeError
    from nodes.native import native_wan

    folder = tmp_path / "wan"
    import shutil

    shutil.copytree(world["assets"] / "wan_t2v", folder)
    shutil.rmtree(folder / "transformer")
    cfg = dict(world["backbone"].transformer.config)
    for change, says in (({"text_dim": 32}, "text input is 32 wide"), ({"attention_head_dim": 16}, "32 wide")):
        keep = {k: v for k, v in cfg.items() if not k.startswith("_")}
        WanTransformer3DModel(**{**keep, **change, "num_layers": 1}).save_pretrained(folder / "transformer")
        model = native_wan(folder, None, comfy)
        with pytest.raises(NodeError, match=rf"^Apply MetaCanvas to MODEL: .*{says}.*load the Wan 2.2 model"):
            _apply(model, world["weights"])


def test_a_plan_made_with_other_weights_is_refused(comfy, world):
    from metacanvas_core.checkpoints import load_connector
    from nodes.comfy import NodeError
    from nodes.native import MetaCanvasPlanToConditioning

    other = load_connector(world["assets"] / "metacanvas_t2v_k1.safetensors")
    with pytest.raises(NodeError, match=r"^Plan to CONDITIONING: .*made with MetaCanvas weights 'metacanvas_t2v'.*"
                                        r"plan with the same weights"):
        MetaCanvasPlanToConditioning().convert(other, world["plan"])


def test_a_conditioning_without_a_plan_is_a_node_error(comfy, world, native):
    import comfy.sample
    import comfy.samplers

    from nodes.comfy import NodeError
    from nodes.native import MetaCanvasPlanToConditioning

    model, vae = native
    pos, _ = MetaCanvasPlanToConditioning().convert(world["weights"], world["plan"])
    neg = [[torch.zeros_like(pos[0][0]), {}]]  # e.g. a ConditioningZeroOut of another text encoder's output
    latent = _empty(vae)["samples"]
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: the negative conditioning carries no "
                                        r"MetaCanvas plan"):
        comfy.sample.sample_custom(_apply(model, world["weights"]), torch.randn_like(latent), CFG,
                                   comfy.samplers.ksampler("euler"), _sigmas(world["backbone"]), pos, neg, latent,
                                   disable_pbar=True)


def test_a_comfyui_without_the_hook_gets_a_node_error_naming_its_version(comfy, world, native, monkeypatch):
    import nodes.native as native_nodes
    from nodes.comfy import NodeError

    monkeypatch.setattr(native_nodes.inspect, "getsource", lambda obj: "def forward_orig(self): pass")
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: this ComfyUI \(0\.\d+\.\d+\) lacks .*"
                                        r"double_block.*update ComfyUI"):
        _apply(native[0], world["weights"])


# -- the DiT part the ComfyUI way: convert-comfy -----------------------------------------------------------------


def test_the_converted_dit_delta_as_a_lora_gives_the_fine_tuned_dit(comfy, world, native, tmp_path):
    import comfy.lora
    from safetensors.torch import load_file

    from metacanvas_core.__main__ import main
    from nodes.native import MetaCanvasNativeBackboneLoader

    out = tmp_path / "metacanvas_t2v_comfy_lora.safetensors"
    assert main(["convert-comfy", str(world["assets"] / "metacanvas_t2v.safetensors"), "--base",
                 str(world["assets"] / "wan_t2v"), "--out", str(out)]) == 0
    base, vae = MetaCanvasNativeBackboneLoader().load("built-in tiny: wan_t2v")
    lora = load_file(str(out))
    patched = base.clone()
    loaded = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(base.model, {}), log_missing=False)
    assert len(loaded) == len([k for k in lora if k.endswith((".diff", ".diff_b"))])  # every key found its tensor
    patched.add_patches(loaded, 1.0)
    assert not any("modulation" in k for k in lora)  # ComfyUI never patches these: the command says so
    # exactly the fine-tuned DiT except for what a LoRA cannot carry: the fine-tune with the base's modulation
    tuned = MetaCanvasNativeBackboneLoader().load("built-in tiny: wan_t2v", "built-in tiny: metacanvas_t2v")[0]
    own = base.model.diffusion_model.state_dict()
    with torch.no_grad():
        for k, v in tuned.model.diffusion_model.named_parameters():
            if k.endswith("modulation"):
                v.copy_(own[k])
    latent = _empty(vae)["samples"]
    a = _native(comfy, _apply(patched, world["weights"]), world, latent)
    b = _native(comfy, _apply(tuned, world["weights"]), world, latent)
    assert (a - b).abs().max().item() < 1e-5


def test_the_converted_whole_dit_holds_comfyuis_own_keys(comfy, world, native, tmp_path):
    from safetensors.torch import load_file

    from metacanvas_core.__main__ import main

    out = tmp_path / "metacanvas_t2v_dit.safetensors"
    assert main(["convert-comfy", str(world["assets"] / "metacanvas_t2v.safetensors"), "--base",
                 str(world["assets"] / "wan_t2v"), "--out", str(out), "--format", "diffusion_models"]) == 0
    sd = load_file(str(out))
    own = native[0].model.diffusion_model.state_dict()
    assert set(sd) == set(own)
    assert all(torch.equal(sd[k].float(), own[k].float()) for k in sd)


# -- FLUX.1-Kontext: image editing with ReferenceLatent ------------------------------------------------------------


@pytest.fixture(scope="module")
def edit(comfy, world):
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan
    from nodes.native import MetaCanvasNativeBackboneLoader

    weights = load_connector(world["assets"] / "metacanvas_edit.safetensors")
    plan = make_plan(world["planner"], weights, ["make the red circle green"], with_unconditional=True)
    model, vae = MetaCanvasNativeBackboneLoader().load("built-in tiny: flux_edit", "built-in tiny: metacanvas_edit")
    torch.manual_seed(0)
    return {"weights": weights, "plan": plan, "model": model, "vae": vae, "image": torch.rand(1, 32, 32, 3),
            "backbone": load_backbone(world["assets"] / "flux_edit")}


def _edit_native(comfy, e, model):
    """Kontext the ComfyUI way: VAE Encode the source, ReferenceLatent on both conditionings, KSampler from the
    encoded source at denoise 1 (pure noise at sigma 1), with the pack's sigmas."""
    import comfy.sample
    import comfy.samplers

    from metacanvas_core.sampling import initial_noise
    from metacanvas_core.schedulers import prepared
    from nodes.native import MetaCanvasPlanToConditioning

    bb = e["backbone"]
    source = e["vae"].encode(e["image"])
    pos, neg = MetaCanvasPlanToConditioning().convert(e["weights"], e["plan"])
    pos, neg = ([[t, {**d, "reference_latents": [source]}] for t, d in c] for c in (pos, neg))
    sched = prepared(bb.scheduler, STEPS, lambda s: bb.set_timesteps(s, STEPS, tuple(source.shape)))
    noise = initial_noise(tuple(source.shape), SEED)
    return comfy.sample.sample_custom(model, noise, CFG, comfy.samplers.ksampler("euler"), sched.sigmas.float(), pos,
                                      neg, source, seed=SEED, disable_pbar=True)


def test_kontext_editing_matches_the_packs_sample_image(comfy, edit):
    from metacanvas_core.backbones.base import Conditioning
    from metacanvas_core.sampling import InjectedBackbone, sample

    e, bb = edit, edit["backbone"]
    ref = bb.encode(e["image"].movedim(-1, 1) * 2 - 1)
    want = sample(InjectedBackbone(bb).inject(e["weights"]), e["plan"], width=32, height=32, steps=STEPS, cfg=CFG,
                  seed=SEED, conditioning=Conditioning(reference=ref))
    got = _edit_native(comfy, e, _apply(e["model"], e["weights"]))
    assert (e["model"].model.process_latent_in(got) - want).abs().max().item() < TOLERANCE
    plain = _edit_native(comfy, e, e["model"])
    assert (plain - got).abs().max().item() > 100 * TOLERANCE  # the canvas acts, on the generated tokens only


def test_kontext_zero_connector_is_bit_for_bit_plain(comfy, edit):
    zero = _zero_weights(edit["weights"])
    assert torch.equal(_edit_native(comfy, edit, _apply(edit["model"], zero)), _edit_native(comfy, edit, edit["model"]))


def test_kontext_a_lora_before_or_after_the_patch_is_kept(comfy, edit):
    import comfy.lora

    def lora(model):
        torch.manual_seed(6)
        key = "diffusion_model.double_blocks.0.img_attn.qkv"
        out_features, in_features = model.model.diffusion_model.double_blocks[0].img_attn.qkv.weight.shape
        sd = {f"{key}.lora_up.weight": torch.randn(out_features, 4) * 0.5,
              f"{key}.lora_down.weight": torch.randn(4, in_features) * 0.5}
        out = model.clone()
        assert out.add_patches(comfy.lora.load_lora(sd, comfy.lora.model_lora_keys_unet(model.model, {})), 1.0)
        return out

    e, w = edit, edit["weights"]
    without = _edit_native(comfy, e, _apply(e["model"], w))
    before = _edit_native(comfy, e, _apply(lora(e["model"]), w))
    after = _edit_native(comfy, e, lora(_apply(e["model"], w)))
    assert (before - without).abs().max().item() > 1e-2 and torch.equal(before, after)


def test_a_patch_that_never_runs_is_an_error_not_a_plain_result(comfy, world, native):
    from nodes.comfy import NodeError

    model, vae = native
    patched = _apply(model, world["weights"])
    patched.model_options["transformer_options"]["patches_replace"]["dit"].pop(("double_block", 0))  # as if the
    # model no longer called the block replace
    with pytest.raises(NodeError, match=r"^Apply MetaCanvas to MODEL: the canvas patch never ran while sampling: "
                                        r"this ComfyUI \(0\.\d+\.\d+\).*update ComfyUI"):
        _native(comfy, patched, world, _empty(vae)["samples"])


def test_a_separate_negative_plan_steers_the_negative_half(comfy, world, native):
    from metacanvas_core.plan import make_plan
    from metacanvas_core.sampling import InjectedBackbone, sample
    from metacanvas_core.schedulers import make_scheduler
    from nodes.native import MetaCanvasPlanToConditioning

    negative = make_plan(world["planner"], world["weights"], ["a blue square at bottom right"])
    bb = world["backbone"]
    want = sample(InjectedBackbone(bb).inject(world["weights"]), world["plan"], negative, width=32, height=32,
                  frames=17, steps=STEPS, cfg=CFG, seed=SEED, scheduler=make_scheduler(bb.scheduler, "euler", shift=5.0))
    import comfy.sample
    import comfy.samplers

    from metacanvas_core.sampling import initial_noise

    model, vae = native
    pos, neg = MetaCanvasPlanToConditioning().convert(world["weights"], world["plan"], negative)
    latent = _empty(vae)["samples"]
    got = comfy.sample.sample_custom(_apply(model, world["weights"]), initial_noise(tuple(latent.shape), SEED), CFG,
                                     comfy.samplers.ksampler("euler"), _sigmas(bb), pos, neg, latent, seed=SEED,
                                     disable_pbar=True)
    assert (model.model.process_latent_in(got) - want).abs().max().item() < TOLERANCE


# -- video editing and in-context video: the widened Wan through ComfyUI's concat_cond ------------------------------


@pytest.fixture(scope="module")
def context(comfy, world):
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan
    from nodes.native import MetaCanvasNativeBackboneLoader

    weights = load_connector(world["assets"] / "metacanvas_video_context.safetensors")
    plan = make_plan(world["planner"], weights, ["make the circle blue"], with_unconditional=True)
    model, vae = MetaCanvasNativeBackboneLoader().load("built-in tiny: wan_video_context",
                                                       "built-in tiny: metacanvas_video_context")
    return {"weights": weights, "plan": plan, "model": model, "vae": vae,
            "backbone": load_backbone(world["assets"] / "wan_video_context")}


@pytest.mark.parametrize("task", ["video-edit", "in-context"])
def test_video_editing_and_in_context_match_the_packs_sample_video(comfy, world, context, task):
    import comfy.sample
    import comfy.samplers

    from metacanvas_core.sampling import InjectedBackbone, initial_noise, sample
    from metacanvas_core.schedulers import make_scheduler
    from metacanvas_core.video_tasks import in_context_inputs, video_edit_inputs
    from nodes.native import MetaCanvasNativeVideoContext, MetaCanvasPlanToConditioning

    c, bb = context, context["backbone"]
    torch.manual_seed(1)
    given = torch.rand(17, 32, 32, 3) if task == "video-edit" else torch.rand(2, 32, 32, 3)
    if task == "video-edit":
        conditioning = video_edit_inputs(bb, given, 8.0).conditioning
        kwargs = {"source_video": given}
    else:
        conditioning = in_context_inputs(bb, [given[:1], given[1:]], 32, 32, 17).conditioning
        kwargs = {"reference_images": given}
    want = sample(InjectedBackbone(bb).inject(c["weights"]), c["plan"], width=32, height=32, frames=17, steps=STEPS,
                  cfg=CFG, seed=SEED, conditioning=conditioning,
                  scheduler=make_scheduler(bb.scheduler, "euler", shift=5.0))
    bare = MetaCanvasPlanToConditioning().convert(c["weights"], c["plan"])
    pos, neg, latent = MetaCanvasNativeVideoContext().make(c["model"], c["vae"], *bare, 32, 32, 17, **kwargs)
    latent = latent["samples"]
    patched = _apply(c["model"], c["weights"])

    def run(p, n):
        return comfy.sample.sample_custom(patched, initial_noise(tuple(latent.shape), SEED), CFG,
                                          comfy.samplers.ksampler("euler"), _sigmas(bb), p, n, latent, seed=SEED,
                                          disable_pbar=True)

    got = run(pos, neg)
    assert (c["model"].model.process_latent_in(got) - want).abs().max().item() < TOLERANCE
    assert (run(*bare) - got).abs().max().item() > 100 * TOLERANCE  # the context acts (not zeros on both routes)


# -- FLUX.1-Kontext's DiT part the ComfyUI way: convert-comfy ------------------------------------------------------

FLUX_TOLERANCE = 1e-4  # max abs difference of the velocity (float32; ComfyUI's and diffusers' attention and RoPE)


def _flux_input():
    torch.manual_seed(3)
    return {"x": torch.randn(1, 16, 8, 8), "sigma": torch.tensor([0.7]), "text": torch.randn(1, 5, 64),
            "pooled": torch.randn(1, 64)}


def _comfy_flux_velocity(diffusion_model, i):
    with torch.no_grad():
        return diffusion_model(i["x"], i["sigma"], i["text"], y=i["pooled"], transformer_options={}).float()


def _diffusers_flux_velocity(state, i):
    from diffusers import FluxTransformer2DModel

    from metacanvas_core.backbones.flux import pack, token_ids, unpack
    from metacanvas_core.builtin import ASSETS

    dit = FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(ASSETS / "flux_edit" / "transformer"))
    dit.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    dit.eval()
    with torch.no_grad():
        out = dit(hidden_states=pack(i["x"]), timestep=i["sigma"], pooled_projections=i["pooled"],
                  encoder_hidden_states=i["text"], txt_ids=torch.zeros(i["text"].shape[1], 3),
                  img_ids=token_ids(4, 4), return_dict=False)[0]
    return unpack(out, 8, 8).float()


def _comfy_flux(comfy, state):
    """ComfyUI's own Flux (comfy.supported_models.Flux) for the tiny flux_edit config, filled strictly with `state`."""
    import json

    import comfy.supported_models

    from metacanvas_core.backbones.native import LAYOUTS
    from metacanvas_core.builtin import ASSETS

    cfg = json.loads((ASSETS / "flux_edit" / "transformer" / "config.json").read_text())
    mc = comfy.supported_models.Flux(LAYOUTS["flux"].native_config(cfg))
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    model.diffusion_model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.diffusion_model.eval()


def test_the_converted_flux_dit_loads_into_comfyuis_flux_and_gives_the_diffusers_dits_output(comfy, edit, tmp_path):
    from safetensors.torch import load_file

    from metacanvas_core.__main__ import main
    from metacanvas_core.builtin import ASSETS
    from metacanvas_core.comfy_export import _read_folder

    out = tmp_path / "metacanvas_edit_dit.safetensors"
    assert main(["convert-comfy", str(ASSETS / "metacanvas_edit.safetensors"), "--base", str(ASSETS / "flux_edit"),
                 "--out", str(out), "--format", "diffusion_models"]) == 0
    sd = load_file(str(out))
    # the same tensors as ComfyUI's own diffusers converter gives the Load Native Backbone node (a fresh one: the
    # module's shared model may still hold an earlier test's patches, which ComfyUI undoes only when it reloads)
    from nodes.native import MetaCanvasNativeBackboneLoader

    fresh = MetaCanvasNativeBackboneLoader().load("built-in tiny: flux_edit", "built-in tiny: metacanvas_edit")[0]
    own = fresh.model.diffusion_model.state_dict()
    assert set(sd) == set(own) and all(torch.equal(sd[k].float(), own[k].float()) for k in sd)
    i = _flux_input()
    got = _comfy_flux_velocity(_comfy_flux(comfy, sd), i)
    want = _diffusers_flux_velocity(_read_folder(ASSETS / "metacanvas_edit_dit"), i)
    assert (got - want).abs().max().item() < FLUX_TOLERANCE
    base = _diffusers_flux_velocity(_read_folder(ASSETS / "flux_edit" / "transformer"), i)
    assert (base - want).abs().max().item() > 100 * FLUX_TOLERANCE  # the fine-tune differs from the base


def _patched_flux_velocity(comfy, lora_file, i):
    """Load Native Backbone's base tiny FLUX with `lora_file` applied as LoraLoaderModelOnly does (load_lora +
    add_patches at strength 1), its weights patched."""
    import comfy.lora
    from safetensors.torch import load_file

    from nodes.native import MetaCanvasNativeBackboneLoader

    base = MetaCanvasNativeBackboneLoader().load("built-in tiny: flux_edit")[0]
    lora = load_file(str(lora_file))
    loaded = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(base.model, {}), log_missing=False)
    patched = base.clone()
    assert set(patched.add_patches(loaded, 1.0)) == set(loaded) and loaded  # every patch found its weight
    patched.patch_model()
    try:
        return _comfy_flux_velocity(patched.model.diffusion_model, i), loaded
    finally:
        patched.unpatch_model()


def test_a_converted_flux_fine_tune_as_diffs_gives_the_fine_tuned_dits_output(comfy, edit, tmp_path):
    from safetensors.torch import load_file

    from metacanvas_core.__main__ import main
    from metacanvas_core.builtin import ASSETS
    from metacanvas_core.comfy_export import _read_folder

    out = tmp_path / "metacanvas_edit_comfy_lora.safetensors"
    assert main(["convert-comfy", str(ASSETS / "metacanvas_edit.safetensors"), "--base", str(ASSETS / "flux_edit"),
                 "--out", str(out)]) == 0
    i = _flux_input()
    got, loaded = _patched_flux_velocity(comfy, out, i)
    assert len(loaded) == len(load_file(str(out)))  # every .diff / .diff_b key was read
    assert any(k.endswith("img_attn.qkv.weight") for k in loaded) and any(k.endswith("linear1.weight") for k in loaded)
    want = _diffusers_flux_velocity(_read_folder(ASSETS / "metacanvas_edit_dit"), i)
    assert (got - want).abs().max().item() < FLUX_TOLERANCE
    # and through ComfyUI's sampler: the same as the Load Native Backbone node's fine-tuned DiT
    import comfy.lora

    from nodes.native import MetaCanvasNativeBackboneLoader

    base = MetaCanvasNativeBackboneLoader().load("built-in tiny: flux_edit")[0].clone()
    base.add_patches(comfy.lora.load_lora(load_file(str(out)), comfy.lora.model_lora_keys_unet(base.model, {})), 1.0)
    assert (_edit_native(comfy, edit, base) - _edit_native(comfy, edit, edit["model"])).abs().max().item() < TOLERANCE


def test_a_converted_flux_peft_lora_of_fused_weights_gives_the_merged_dits_output(comfy, edit, tmp_path):
    import dataclasses

    from safetensors.torch import save_file

    from metacanvas_core.builtin import ASSETS
    from metacanvas_core.checkpoints import DitPart
    from metacanvas_core.comfy_export import _read_folder, convert

    torch.manual_seed(5)
    base = _read_folder(ASSETS / "flux_edit" / "transformer")
    mods = [f"transformer_blocks.{b}.attn.{m}" for b in (0, 1) for m in ("to_q", "to_k", "to_v", "add_k_proj")]
    mods += [f"single_transformer_blocks.{b}.{m}" for b in (0, 3) for m in ("attn.to_q", "attn.to_v", "proj_mlp")]
    mods += ["single_transformer_blocks.2.proj_out", "norm_out.linear", "transformer_blocks.1.ff.net.2"]
    pairs = {m: (torch.randn(4, base[m + ".weight"].shape[1]) * 0.2, torch.randn(base[m + ".weight"].shape[0], 4) * 0.2)
             for m in mods}
    lora = tmp_path / "x_dit_lora.safetensors"
    save_file({f"transformer.{m}.lora_{n}.weight": t for m, ab in pairs.items() for n, t in zip("AB", ab)}, str(lora))
    out = tmp_path / "x_comfy_lora.safetensors"
    convert(dataclasses.replace(edit["weights"], dit=DitPart("lora", lora), _placed={}),
            ASSETS / "flux_edit" / "transformer", out)
    i = _flux_input()
    got, _ = _patched_flux_velocity(comfy, out, i)
    merged = {k: v.float() for k, v in base.items()}
    for m, (a, b) in pairs.items():
        merged[m + ".weight"] = merged[m + ".weight"] + b @ a
    want = _diffusers_flux_velocity(merged, i)
    assert (got - want).abs().max().item() < FLUX_TOLERANCE
    assert (want - _diffusers_flux_velocity(base, i)).abs().max().item() > 100 * FLUX_TOLERANCE

"""The native route: MetaCanvas on ComfyUI's own models, sampled by KSampler.

Plan to CONDITIONING turns a plan into ComfyUI CONDITIONING (the text connector's output as the model's text
context, the plan attached); Apply MetaCanvas to MODEL clones a MODEL and hangs the canvas connector's per-step part
on ComfyUI's model patches; Load Native Backbone builds ComfyUI's own model classes from a diffusers folder (the
built-in tiny ones, which ComfyUI's own loaders cannot size) and returns ComfyUI's MODEL and VAE; Video Latent from
VAE makes Wan22ImageToVideoLatent's LATENT for any Wan VAE.

ComfyUI is imported inside the functions only (the pack loads without it); the canvas arithmetic is
`metacanvas_core.native`, what differs per architecture `metacanvas_core.backbones.native`.
"""

from __future__ import annotations

import copy
import inspect
import json
import uuid
from pathlib import Path

import torch

from metacanvas_core.errors import MetaCanvasError

from .comfy import backbone_choices, connector_choices, node_error, reported_as, resolve

PLAN_TO_CONDITIONING = "Plan to CONDITIONING"
APPLY_TO_MODEL = "Apply MetaCanvas to MODEL"
NATIVE_LOADER = "Load Native Backbone (MetaCanvas)"
BASE_DIT = "base DiT (no MetaCanvas DiT part)"


def comfyui_version() -> str:
    try:
        import comfyui_version  # noqa: PLC0415  (ComfyUI only)

        return comfyui_version.__version__
    except ImportError:
        return "unknown"


def _comfy(node: str):
    """ComfyUI's modules the native nodes use, or a node error when this is not running inside ComfyUI."""
    try:
        import comfy.model_management  # noqa: PLC0415
        import comfy.model_patcher  # noqa: PLC0415
        import comfy.patcher_extension  # noqa: PLC0415
    except ImportError as e:
        raise node_error(node, "this node works on ComfyUI's own models and needs ComfyUI (it is not importable "
                               f"here: {e}); without ComfyUI use the pack's route (Sample Image / Sample Video)") from e
    return comfy


def check_hooks(node: str, model_patcher, lay) -> None:
    """Version guard: what the patch relies on, by name, with the ComfyUI version when something is missing."""
    comfy = _comfy(node)
    missing = []
    wrappers = getattr(comfy.patcher_extension, "WrappersMP", None)
    for name in ("DIFFUSION_MODEL", "SAMPLER_SAMPLE"):
        if wrappers is None or not hasattr(wrappers, name):
            missing.append(f"patcher_extension.WrappersMP.{name}")
    for name in ("clone", "add_wrapper_with_key", "set_model_patch_replace", "set_model_post_input_patch"):
        if not hasattr(model_patcher, name):
            missing.append(f"ModelPatcher.{name}")
    diffusion = model_patcher.model.diffusion_model
    hooked = {"double_block_0": ("patches_replace", "double_block"), "post_input": ("post_input", "post_input")}
    if lay.hook in hooked:
        try:
            source = inspect.getsource(type(diffusion).forward_orig)
        except (OSError, TypeError, AttributeError):
            source = ""
        if not all(word in source for word in hooked[lay.hook]):
            missing.append(f"{type(diffusion).__name__}.forward_orig's {lay.hook} hook")
    if missing:
        raise node_error(node, f"this ComfyUI ({comfyui_version()}) lacks what the canvas patch hooks into: "
                               f"{', '.join(missing)}; update ComfyUI (the patch was written against 0.3.64)")


# ---------------------------------------------------------------------------------------------------------------
# Plan to CONDITIONING


class MetaCanvasPlanToConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "connector": ("METACANVAS_CONNECTOR", {"tooltip": "The MetaCanvas weights the plan was made with."}),
                "plan": ("METACANVAS_PLAN", {"tooltip": "The positive plan, from Plan Canvas."}),
            },
            "optional": {
                "negative_plan": ("METACANVAS_PLAN", {
                    "tooltip": "A negative plan; without one the negative is the empty prompt's plan that Plan "
                               "Canvas attaches (what caption dropout trained classifier-free guidance with).",
                }),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The plan's text context for KSampler's positive input, with the plan attached for Apply "
                       "MetaCanvas to MODEL.", "The negative plan (or the empty prompt's) for KSampler's negative.")
    FUNCTION = "convert"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Turns a MetaCanvas plan into ComfyUI CONDITIONING for the native model: the text connector's "
                   "output replaces the model's text encoder, and the plan rides along so Apply MetaCanvas to MODEL "
                   "adds the right canvas to the positive and the negative.")

    def convert(self, connector, plan, negative_plan=None):
        with reported_as(PLAN_TO_CONDITIONING):
            from metacanvas_core.backbones.native import layout
            from metacanvas_core.native import plan_conditioning

            lay = layout(connector.backbone_architecture)
            negative = negative_plan if negative_plan is not None else plan.unconditional
            if negative is None:
                raise MetaCanvasError("the plan carries no empty-prompt plan for the negative: connect a negative "
                                      "plan (Plan Canvas with an empty prompt)")
            return plan_conditioning(plan, negative, connector, lay)


# ---------------------------------------------------------------------------------------------------------------
# Apply MetaCanvas to MODEL


class CanvasPatch:
    """The canvas on ComfyUI's own model: a ('dit', 'double_block', 0) replace (Wan) that adds the residual to the
    patch-embedded tokens, then calls the replace it took the slot from (or the original block), or a post_input
    patch (FLUX, right after img_in; the generated tokens come first); a SAMPLER_SAMPLE
    wrapper that maps each cond's uuid to its plan; a DIFFUSION_MODEL wrapper that prepares the step's canvas once
    per model call. `.to()` / `.models()` let ComfyUI load and offload the connector with the model."""

    def __init__(self, canvas, fuser_patcher, lay, patch_size, multiplier, previous=None) -> None:
        self.canvas, self.fuser_patcher, self.layout = canvas, fuser_patcher, lay
        self.patch_size, self.multiplier, self.previous = patch_size, multiplier, previous
        self.key = f"metacanvas_{uuid.uuid4().hex[:8]}"
        self.calls = 0
        self._step = None

    # -- per sampling run: which plan each cond carries
    def sampler_wrapper(self, executor, guider, sigmas, extra_args, *rest, **kwargs):
        from metacanvas_core.native import PLAN_KEY, PLANS_KEY

        plans = {}
        for conds in guider.conds.values():
            for c in conds:
                if c.get(PLAN_KEY) is not None:
                    plans[c["uuid"]] = c[PLAN_KEY]
        options = extra_args["model_options"]
        options["transformer_options"] = {**options.get("transformer_options", {}), PLANS_KEY: plans}
        self.calls = 0
        out = executor(guider, sigmas, extra_args, *rest, **kwargs)
        if self.calls == 0:
            raise node_error(APPLY_TO_MODEL, f"the canvas patch never ran while sampling: this ComfyUI "
                                             f"({comfyui_version()}) did not call the model's {self.layout.hook} hook; "
                                             "update ComfyUI (the patch was written against 0.3.64)")
        return out

    # -- per model call: the step's canvas, noise levels and given frames
    def diffusion_wrapper(self, executor, *args, **kwargs):
        from metacanvas_core.native import PLANS_KEY

        args = list(args)
        options = args[self.layout.options_arg]
        x, timestep = args[0], args[1]
        uuids, which = options.get("uuids", []), options.get("cond_or_uncond", [])
        plans = options.get(PLANS_KEY, {})
        chosen = []
        for u, w in zip(uuids, which):
            if u not in plans:
                side = "positive" if w == 0 else "negative"
                raise node_error(APPLY_TO_MODEL, f"the {side} conditioning carries no MetaCanvas plan: make both "
                                                 "positive and negative with Plan to CONDITIONING (the same weights)")
            chosen.append(plans[u])
        if not chosen:
            return executor(*args, **kwargs)
        with reported_as(APPLY_TO_MODEL):
            step = self.canvas.step(chosen, x.shape[0] // len(chosen), tuple(x.shape), self.patch_size, timestep,
                                    self.multiplier, x.device)
        args[self.layout.options_arg] = {**options, self.key: step}
        self._step = step  # FLUX's post_input patch is called without transformer_options (0.3.64)
        try:
            return executor(*args, **kwargs)
        finally:
            self._step = None

    # -- the hook: Wan's block 0 replace (args, extra), or FLUX's post_input patch (args)
    def __call__(self, args, extra=None):
        options = args.get("transformer_options")
        step = options.get(self.key) if options is not None else self._step
        if step is not None:
            with reported_as(APPLY_TO_MODEL):
                args = {**args, "img": self.canvas.add(args["img"], step)}
            self.calls += 1
        if extra is None:  # post_input: the next patch in ComfyUI's list gets what this one returns
            return args
        if self.previous is not None:
            return self.previous(args, extra)
        return extra["original_block"](args)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone deep-copies model_options, where the replace lives, but only shallow-copies the wrappers
        # bound to this object: clones share it (no second copy of the connector per clone, one call counter).
        return self

    def to(self, device_or_dtype):
        if isinstance(device_or_dtype, torch.device):
            self.canvas.to(device_or_dtype)
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def models(self):
        more = self.previous.models() if self.previous is not None and hasattr(self.previous, "models") else []
        return [self.fuser_patcher, *more]


def native_layout_of(model, node: str):
    """The MODEL's architecture as the native route knows it, or a node error naming what it is."""
    from metacanvas_core.backbones.native import LAYOUTS, layout_for_model

    kind = type(model.model).__name__
    lay = layout_for_model(kind)
    if lay is None:
        raise node_error(node, f"the MODEL is a {kind} model, which MetaCanvas has no native route for (it serves "
                               f"{', '.join(lay.title for lay in LAYOUTS.values())})")
    return lay


class MetaCanvasApplyToModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "ComfyUI's own model (UNETLoader, a GGUF loader, Load Native Backbone),"
                                               " with or without LoRAs; it is cloned, never changed."}),
                "connector": ("METACANVAS_CONNECTOR", {"tooltip": "The MetaCanvas weights, the same ones Plan Canvas "
                                                                  "used."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                       "tooltip": "How strongly the canvas steers the model (0: off)."}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the MODEL that adds the canvas; sample it with KSampler and the CONDITIONING "
                       "from Plan to CONDITIONING.",)
    FUNCTION = "apply"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Adds the MetaCanvas canvas connector to ComfyUI's own model as a model patch, as a LoRA is added "
                   "to a MODEL: a clone carries it, the loaded model stays as it was.")

    def apply(self, model, connector, strength: float = 1.0):
        node = APPLY_TO_MODEL
        comfy = _comfy(node)
        with reported_as(node):
            from metacanvas_core.backbones.native import layout
            from metacanvas_core.limits import STRENGTH
            from metacanvas_core.native import NativeCanvas

            strength = STRENGTH.check(strength)
            lay = native_layout_of(model, node)
            wanted = layout(connector.backbone_architecture)
            if wanted is not lay:
                raise MetaCanvasError(
                    f"the MetaCanvas weights {connector.name!r} were trained for {wanted.title}, but the MODEL is "
                    f"{lay.title} ({type(model.model).__name__}): load a {wanted.title} model, or weights made for "
                    f"{lay.title}")
            check_hooks(node, model, lay)
            diffusion = model.model.diffusion_model
            cfg = connector.config
            width, text_width = lay.model_widths(diffusion)
            if width != cfg.dit_dim:
                raise MetaCanvasError(
                    f"the MODEL's DiT is {width} wide but the MetaCanvas weights {connector.name!r} were "
                    f"trained on one {cfg.dit_dim} wide: load the {lay.title} model these weights were trained with")
            lay.check_text(text_width, cfg.caption_channels)
            fuser = copy.deepcopy(connector.connector.canvas_fuser).eval().requires_grad_(False)
            fuser_patcher = comfy.model_patcher.ModelPatcher(
                fuser, load_device=model.load_device, offload_device=model.offload_device)
            canvas = NativeCanvas(connector, strength, lay, fuser=fuser)
            sampling = model.get_model_object("model_sampling")
            multiplier = float(getattr(sampling, "multiplier", lay.timestep_multiplier))
            patched = model.clone()
            previous = None
            if lay.hook == "double_block_0":
                replaces = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
                previous = replaces.get(("double_block", 0))
            patch = CanvasPatch(canvas, fuser_patcher, lay, diffusion.patch_size, multiplier, previous)
            wrappers = comfy.patcher_extension.WrappersMP
            patched.add_wrapper_with_key(wrappers.SAMPLER_SAMPLE, patch.key, patch.sampler_wrapper)
            patched.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, patch.key, patch.diffusion_wrapper)
            if lay.hook == "double_block_0":
                patched.set_model_patch_replace(patch, "dit", "double_block", 0)
            else:  # ComfyUI keeps a list: earlier post_input patches run first, later ones after
                patched.set_model_post_input_patch(patch)
            return (patched,)


# ---------------------------------------------------------------------------------------------------------------
# Load Native Backbone: ComfyUI's own model classes built from a diffusers folder


def _native_choices() -> dict[str, Path]:
    from metacanvas_core.backbones.native import LAYOUTS

    out = {}
    for name, folder in backbone_choices().items():
        try:
            cfg = json.loads((folder / "transformer" / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if _TRANSFORMER_CLASSES.get(cfg.get("_class_name")) in LAYOUTS:
            out[name] = folder
    return out


_TRANSFORMER_CLASSES = {"WanTransformer3DModel": "wan", "FluxTransformer2DModel": "flux"}
_BUILDERS = {"wan": lambda *a: native_wan(*a), "flux": lambda *a: native_flux(*a)}


def _dit_choices() -> dict[str, Path | None]:
    return {BASE_DIT: None, **connector_choices()}


def _read_transformer(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MetaCanvasError(f"{str(folder)!r} holds no .safetensors transformer weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


class _DiffusersVAE(torch.nn.Module):
    """ComfyUI's VAE calls first_stage_model.encode(pixels in [-1, 1]) -> latents and .decode(latents) -> pixels;
    this answers them with the folder's diffusers VAE (AutoencoderKLWan or AutoencoderKL): the posterior's mode, raw,
    as a LATENT holds it (the model's latent format normalises it on the way in, as the pack's adapters do)."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    @torch.no_grad()
    def encode(self, x):
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()

    @torch.no_grad()
    def decode(self, z):
        return self.vae.decode(z.to(self.vae.dtype)).sample


def native_vae(folder: Path, comfy):
    """ComfyUI's VAE object around the folder's diffusers VAE. ComfyUI's own Wan / FLUX VAE classes fix the real
    models' widths and compression (Wan 2.2: 48 channels, 16x; FLUX: 8x), which the tiny VAEs do not have, so the
    object's first stage is the diffusers VAE itself; VAE Encode / Decode and every node that takes a VAE use it."""
    import comfy.sd  # noqa: PLC0415
    import diffusers

    cfg = json.loads((folder / "vae" / "config.json").read_text())
    cls = getattr(diffusers, cfg["_class_name"])
    vae = cls.from_pretrained(folder / "vae", torch_dtype=torch.float32, use_safetensors=True)
    out = comfy.sd.VAE.__new__(comfy.sd.VAE)
    mm = comfy.model_management
    if cfg["_class_name"] == "AutoencoderKLWan":
        s, t = vae.config.scale_factor_spatial, vae.config.scale_factor_temporal
        out.upscale_ratio = (lambda a: max(0, a * t - (t - 1)), s, s)
        out.upscale_index_formula = (t, s, s)
        out.downscale_ratio = (lambda a: max(0, (a + t - 1) // t), s, s)
        out.downscale_index_formula = (t, s, s)
        out.latent_dim, out.latent_channels = 3, vae.config.z_dim
    else:  # an image VAE (AutoencoderKL: FLUX)
        s = 2 ** (len(vae.config.block_out_channels) - 1)
        out.upscale_ratio = out.downscale_ratio = s
        out.upscale_index_formula = out.downscale_index_formula = None
        out.latent_dim, out.latent_channels = 2, vae.config.latent_channels
    out.output_channels = 3
    out.memory_used_encode = lambda shape, dtype: 2000 * shape[-2] * shape[-1] * mm.dtype_size(dtype)
    out.memory_used_decode = lambda shape, dtype: 2000 * shape[-2] * shape[-1] * s * s * mm.dtype_size(dtype)
    out.process_input = lambda image: image * 2.0 - 1.0
    out.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
    out.working_dtypes = [torch.float32]
    out.disable_offload, out.not_video, out.extra_1d_channel, out.crop_input = False, False, None, True
    out.first_stage_model = _DiffusersVAE(vae).eval()
    out.device = mm.vae_device()
    out.vae_dtype = torch.float32
    out.output_device = mm.intermediate_device()
    out.patcher = comfy.model_patcher.ModelPatcher(out.first_stage_model, load_device=out.device,
                                                   offload_device=mm.vae_offload_device())
    return out


def _patcher(model_config, state, source, comfy):
    """ComfyUI's own model for `model_config`, filled with `state` (ComfyUI's keys), in a ModelPatcher."""
    mm = comfy.model_management
    model_config.set_inference_dtype(torch.float32, None)
    load, offload = mm.get_torch_device(), mm.unet_offload_device()
    model = model_config.get_model({}, device=offload)
    missing, unexpected = model.diffusion_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MetaCanvasError(f"the transformer in {str(source)!r} does not fill ComfyUI's model (missing "
                              f"{list(missing)[:4]}, unexpected {list(unexpected)[:4]})")
    model.diffusion_model.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=load, offload_device=offload)


def native_flux(folder: Path, dit: Path | None, comfy):
    """ComfyUI's own FLUX (comfy.ldm.flux.model.Flux in model_base.Flux) built from the folder's diffusers config,
    its tensors renamed by ComfyUI's own diffusers converter (model_detection.convert_diffusers_mmdit)."""
    import comfy.latent_formats  # noqa: PLC0415
    import comfy.model_detection  # noqa: PLC0415
    import comfy.supported_models  # noqa: PLC0415
    from metacanvas_core.backbones.flux import calculate_shift
    from metacanvas_core.backbones.native import LAYOUTS

    lay = LAYOUTS["flux"]
    source = dit if dit is not None else folder / "transformer"
    config = json.loads((source / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scale, shift_factor = vae_cfg.get("scaling_factor", 1.0), vae_cfg.get("shift_factor") or 0.0

    class FolderLatent(comfy.latent_formats.Flux):
        latent_channels = vae_cfg["latent_channels"]

        def __init__(self):
            self.scale_factor, self.shift_factor = scale, shift_factor
            self.latent_rgb_factors = self.latent_rgb_factors_bias = None
            self.taesd_decoder_name = None

    # ComfyUI's FLUX shift is the pack's mu; at the tiny model's trained 32x32 (64 tokens; ModelSamplingFlux sets
    # it for other sizes)
    mu = calculate_shift(64, sched)
    model_config_cls = type("MetaCanvasNativeFlux", (comfy.supported_models.Flux,),
                            {"latent_format": FolderLatent, "sampling_settings": {"shift": mu}})
    state = comfy.model_detection.convert_diffusers_mmdit(_read_transformer(source), "")
    if state is None:
        raise MetaCanvasError(f"ComfyUI does not read {str(source)!r} as a diffusers FLUX transformer")
    return _patcher(model_config_cls(lay.native_config(config)), state, source, comfy)


def native_wan(folder: Path, dit: Path | None, comfy):
    """ComfyUI's own Wan 2.2 model (comfy.ldm.wan.model.WanModel in model_base.WAN22, in a ModelPatcher) built
    from the folder's diffusers config, with its (or the MetaCanvas weights' fine-tuned) transformer's tensors
    renamed to ComfyUI's keys."""
    import comfy.latent_formats  # noqa: PLC0415
    import comfy.supported_models  # noqa: PLC0415
    from metacanvas_core.backbones.native import LAYOUTS

    lay = LAYOUTS["wan"]
    source = dit if dit is not None else folder / "transformer"
    config = json.loads((source / "config.json").read_text())
    unet_config = lay.native_config(config)
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    channels = vae_cfg["z_dim"]
    mean = torch.tensor(vae_cfg["latents_mean"]).view(1, channels, 1, 1, 1)
    std = torch.tensor(vae_cfg["latents_std"]).view(1, channels, 1, 1, 1)

    class FolderLatent(comfy.latent_formats.Wan21):
        latent_channels = channels
        latent_rgb_factors = None
        latent_rgb_factors_bias = None

        def __init__(self):
            self.scale_factor = 1.0
            self.latents_mean, self.latents_std = mean, std
            self.taesd_decoder_name = None

    shift = float(sched.get("flow_shift", sched.get("shift", 5.0)))
    model_config_cls = type("MetaCanvasNativeWan22", (comfy.supported_models.WAN22_T2V,),
                            {"latent_format": FolderLatent, "sampling_settings": {"shift": shift}})
    return _patcher(model_config_cls(unet_config), lay.native_state_dict(_read_transformer(source)), source, comfy)


class MetaCanvasNativeBackboneLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backbone": (list(_native_choices()), {
                    "tooltip": "A diffusers Wan 2.2 TI2V or FLUX.1-Kontext folder (built-in tiny wan_t2v / flux_edit, "
                               "or one under models/diffusers) built as ComfyUI's own model: what UNETLoader cannot "
                               "do for the tiny models (ComfyUI sizes a Wan or FLUX from real checkpoints' widths and "
                               "patch size).",
                }),
                "dit": (list(_dit_choices()), {
                    "tooltip": "The DiT to load: the folder's own, or the fine-tuned DiT that MetaCanvas weights name "
                               "beside them (e.g. metacanvas_t2v's), as their DiT part.",
                }),
            }
        }

    RETURN_TYPES = ("MODEL", "VAE")
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("ComfyUI's own Wan / FLUX model: chain LoraLoaderModelOnly, ModelSamplingSD3 / ModelSamplingFlux, "
                       "Apply MetaCanvas to MODEL and KSampler.",
                       "ComfyUI's VAE object around the folder's VAE, for VAE Encode / Decode.")
    FUNCTION = "load"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Builds ComfyUI's own model classes (Wan 2.2, FLUX.1-Kontext) from a diffusers folder and returns "
                   "ComfyUI's MODEL and VAE, for the tiny built-in models that ComfyUI's UNETLoader cannot size.")

    @classmethod
    def VALIDATE_INPUTS(cls, backbone, dit):
        for choices, name, what, where in ((_native_choices(), backbone, "backbone", "diffusers"),
                                           (_dit_choices(), dit, "dit", "metacanvas")):
            try:
                resolve(choices, name, f"{NATIVE_LOADER}: {what}", where)
            except MetaCanvasError as e:
                return str(e)
        return True

    def load(self, backbone: str, dit: str = BASE_DIT):
        node = NATIVE_LOADER
        comfy = _comfy(node)
        with reported_as(node):
            folder = resolve(_native_choices(), backbone, "backbone", "diffusers")
            weights = resolve(_dit_choices(), dit, "dit", "metacanvas")
            dit_folder = None
            if weights is not None:
                from metacanvas_core.checkpoints import load_connector

                loaded = load_connector(weights, device="cpu", dtype=torch.float32)
                if loaded.dit.kind != "transformer":
                    raise MetaCanvasError(
                        f"the MetaCanvas weights {loaded.name!r} carry no fine-tuned DiT folder (their DiT part is "
                        f"{loaded.dit.kind!r}): choose '{BASE_DIT}', or convert a LoRA DiT part with "
                        "`python -m metacanvas_core convert-comfy` and load it with LoraLoaderModelOnly")
                dit_folder = loaded.dit.path
            cls = json.loads((folder / "transformer" / "config.json").read_text())["_class_name"]
            model = _BUILDERS[_TRANSFORMER_CLASSES[cls]](folder, dit_folder, comfy)
            return (model, native_vae(folder, comfy))


# ---------------------------------------------------------------------------------------------------------------
# Video latent: what Wan22ImageToVideoLatent makes, sized by the VAE instead of Wan 2.2 5B's fixed numbers

VIDEO_LATENT = "Video Latent from VAE (MetaCanvas)"


class MetaCanvasNativeVideoLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The model's VAE: its channels and compression size the latent."}),
                "width": ("INT", {"default": 32, "min": 4, "max": 8192, "step": 4,
                                  "tooltip": "Clip width in pixels, a multiple of the VAE's compression."}),
                "height": ("INT", {"default": 32, "min": 4, "max": 8192, "step": 4,
                                   "tooltip": "Clip height in pixels, a multiple of the VAE's compression."}),
                "length": ("INT", {"default": 17, "min": 1, "max": 4097, "step": 4,
                                   "tooltip": "Frames of the clip (the VAE's temporal stride x k + 1)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Clips per run."}),
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "Image-to-video: the clip's first frame. It is kept clean "
                                                     "(noise_mask 0, timestep 0): the canvas never touches it."}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The LATENT for KSampler (with the start image: its first frame and a noise_mask that keeps it "
                       "clean).",)
    FUNCTION = "make"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("An empty video LATENT for a Wan model, or with a start image its encoded first frame and a "
                   "noise_mask that keeps it clean: Wan22ImageToVideoLatent's output, but sized by the VAE (that node "
                   "fixes Wan 2.2 5B's 48 channels and 16x compression, which the tiny built-in VAE does not have).")

    def make(self, vae, width: int, height: int, length: int, batch_size: int, start_image=None):
        node = VIDEO_LATENT
        comfy = _comfy(node)
        s = vae.spacial_compression_encode()
        t = vae.temporal_compression_decode() or 1
        if width % s or height % s:
            raise node_error(node, f"width {width} and height {height} must be multiples of the VAE's {s}")
        if (length - 1) % t:
            raise node_error(node, f"length {length} does not fit the VAE: use {t}k+1 frames, e.g. "
                                   f"{(length - 1) // t * t + 1}")
        frames = (length - 1) // t + 1
        device = comfy.model_management.intermediate_device()
        latent = torch.zeros([1, vae.latent_channels, frames, height // s, width // s], device=device)
        if start_image is None:
            return ({"samples": latent.repeat(batch_size, 1, 1, 1, 1)},)
        import comfy.utils  # noqa: PLC0415

        image = comfy.utils.common_upscale(start_image[:1, :, :, :3].movedim(-1, 1), width, height, "bilinear",
                                           "center").movedim(1, -1)
        first = vae.encode(image)
        mask = torch.ones([1, 1, frames, height // s, width // s], device=device)
        latent[:, :, : first.shape[2]] = first.to(device)
        mask[:, :, : first.shape[2]] = 0.0
        return ({"samples": latent.repeat(batch_size, 1, 1, 1, 1),
                 "noise_mask": mask.repeat(batch_size, 1, 1, 1, 1)},)


# ---------------------------------------------------------------------------------------------------------------
# Video editing and in-context video: the widened Wan's channel-concatenated context, ComfyUI's concat_cond way

VIDEO_CONTEXT = "Video Context for Wan (MetaCanvas)"


class _NativeWanContext:
    """What `video_tasks` asks of a backbone to build the widened Wan's context, answered by ComfyUI's MODEL and VAE
    (the same arithmetic as the pack's route: normalised latents of the source clip or the references, and the mask)."""

    architecture = "wan"

    def __init__(self, model, vae) -> None:
        diffusion = model.model.diffusion_model
        self.name = type(model.model).__name__
        self.latent_format = model.model.latent_format
        self.vae = vae
        self.latent_channels = diffusion.out_dim
        extra = diffusion.in_dim - diffusion.out_dim
        self.mask_channels = extra - diffusion.out_dim if extra > diffusion.out_dim else 0
        self.step = vae.spacial_compression_encode() * diffusion.patch_size[-1]
        self.stride = vae.temporal_compression_decode() or 1
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def takes(self, part: str) -> bool:
        return part in ("context", "context_mask") and self.mask_channels > 0

    def check_size(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0 or width % self.step or height % self.step:
            raise MetaCanvasError(f"width {width} and height {height} must be positive multiples of {self.step} for "
                                  "this model (VAE compression x patch size)")

    def latent_frames(self, frames: int) -> int:
        if frames < 1 or (frames - 1) % self.stride:
            raise MetaCanvasError(f"frames {frames} does not fit the VAE: a clip has {self.stride}k+1 frames")
        return (frames - 1) // self.stride + 1

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images or (1, 3, F, H, W) clips in [-1, 1] -> normalised latents (B, C, f, h, w)."""
        clips = pixels[:, :, None] if pixels.ndim == 4 else pixels
        out = [self.vae.encode(((c + 1) / 2).movedim(0, -1)) for c in clips]  # ComfyUI's VAE: (F, H, W, 3) in 0..1
        return self.latent_format.process_in(torch.cat(out).float())


class MetaCanvasNativeVideoContext:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "ComfyUI's widened Wan (e.g. Load Native Backbone with "
                                               "wan_video_context): its channels and latent format."}),
                "vae": ("VAE", {"tooltip": "The model's VAE: encodes the source clip or the references."}),
                "positive": ("CONDITIONING", {"tooltip": "From Plan to CONDITIONING."}),
                "negative": ("CONDITIONING", {"tooltip": "From Plan to CONDITIONING."}),
                "width": ("INT", {"default": 32, "min": 4, "max": 8192, "step": 4,
                                  "tooltip": "In-context video: the clip's width (editing takes the source's)."}),
                "height": ("INT", {"default": 32, "min": 4, "max": 8192, "step": 4,
                                   "tooltip": "In-context video: the clip's height (editing takes the source's)."}),
                "length": ("INT", {"default": 17, "min": 1, "max": 4097, "step": 4,
                                   "tooltip": "In-context video: frames (editing takes the source's)."}),
            },
            "optional": {
                "source_video": ("IMAGE", {"tooltip": "Video editing: the clip to edit (its frames); the output "
                                                      "takes its size and frame count."}),
                "reference_images": ("IMAGE", {"tooltip": "In-context video: reference images (a batch), one per "
                                                          "latent frame from the first."}),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = ("The positive with the context.", "The negative with the context.",
                       "An empty LATENT of the clip's size.")
    FUNCTION = "make"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Video editing and in-context video on ComfyUI's own widened Wan: the source clip's or the "
                   "references' latents and their mask go into the conditioning as ComfyUI's concat_latent_image / "
                   "concat_mask (Wan I2V's channel order: noisy latents, mask, context), and an empty LATENT.")

    def make(self, model, vae, positive, negative, width, height, length, source_video=None, reference_images=None):
        node = VIDEO_CONTEXT
        comfy = _comfy(node)
        with reported_as(node):
            from metacanvas_core.video_tasks import in_context_inputs, video_edit_inputs

            if (source_video is None) == (reference_images is None):
                raise MetaCanvasError("give either source_video (video editing) or reference_images (in-context "
                                      "video)")
            backbone = _NativeWanContext(model, vae)
            if source_video is not None:
                inputs = video_edit_inputs(backbone, source_video, 8.0, where="source_video")
            else:
                inputs = in_context_inputs(backbone, list(reference_images[:, None].unbind(0)), width, height, length,
                                           where="reference_images")
            cond = inputs.conditioning
            extra = {"concat_latent_image": backbone.latent_format.process_out(cond.context),
                     # ComfyUI's Wan feeds 1 - concat_mask to the DiT; ours is 1 where a latent is given
                     "concat_mask": 1.0 - cond.context_mask}
            out = [[[t, {**d, **extra}] for t, d in c] for c in (positive, negative)]
            latent = torch.zeros([1, backbone.latent_channels, *cond.context.shape[2:]],
                                 device=comfy.model_management.intermediate_device())
            return (out[0], out[1], {"samples": latent})


NODE_CLASS_MAPPINGS = {
    "MetaCanvasPlanToConditioning": MetaCanvasPlanToConditioning,
    "MetaCanvasApplyToModel": MetaCanvasApplyToModel,
    "MetaCanvasNativeBackboneLoader": MetaCanvasNativeBackboneLoader,
    "MetaCanvasNativeVideoLatent": MetaCanvasNativeVideoLatent,
    "MetaCanvasNativeVideoContext": MetaCanvasNativeVideoContext,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MetaCanvasPlanToConditioning": PLAN_TO_CONDITIONING,
    "MetaCanvasApplyToModel": APPLY_TO_MODEL,
    "MetaCanvasNativeBackboneLoader": NATIVE_LOADER,
    "MetaCanvasNativeVideoLatent": VIDEO_LATENT,
    "MetaCanvasNativeVideoContext": VIDEO_CONTEXT,
}

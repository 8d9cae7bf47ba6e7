"""Loaders: the MLLM planner, the diffusion backbone and the MetaCanvas weights (the canvas connector).

One load per (folder, dtype, device) per process: two loader nodes for the same model share it, and it is freed
once no node output holds it any more. transformers and diffusers are imported on first use, not when ComfyUI
starts.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import torch

from metacanvas_core.errors import MetaCanvasError

from .comfy import (
    DEVICES,
    DTYPES,
    backbone_choices,
    connector_choices,
    initial_device,
    manage,
    offload_device,
    planner_choices,
    refused_weights,
    reported_as,
    resolve,
    torch_device,
    torch_dtype,
)

PLANNER_LOADER = "Load MLLM Planner"
BACKBONE_LOADER = "Load MetaCanvas Backbone"
WEIGHTS_LOADER = "Load MetaCanvas Weights"

_DTYPE_TIP = "Weight precision. auto: fp32 on the CPU; bf16 on GPUs that support it, else fp16."
_DEVICE_TIP = "Where the model runs. auto: ComfyUI's device (the GPU if there is one); cpu works everywhere."

_loaded: "weakref.WeakValueDictionary[tuple, object]" = weakref.WeakValueDictionary()


def _shared(key: tuple, load: Callable[[], object]):
    """The model already loaded under `key` (while any node output still holds it), else a fresh load."""
    obj = _loaded.get(key)
    if obj is None:
        obj = load()
        _loaded[key] = obj
    return obj


def _listed(choices: dict[str, Path], name: str, what: str, where: str,
            refused: dict[str, Path] | None = None) -> bool | str:
    """VALIDATE_INPUTS answer: True, or the same message `resolve` raises at run time."""
    try:
        resolve(choices, name, what, where, refused)
    except MetaCanvasError as e:
        return str(e)
    return True


class MetaCanvasPlannerLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "planner": (list(planner_choices()), {
                    "tooltip": "The multimodal LLM that plans the image: the built-in tiny shapes-world planner, or "
                               "a Qwen2.5-VL-Instruct folder (config.json, *.safetensors, tokenizer) in "
                               "ComfyUI/models/LLM.",
                }),
                "dtype": (DTYPES, {"default": "auto", "tooltip": _DTYPE_TIP}),
                "device": (DEVICES, {"default": "auto", "tooltip": _DEVICE_TIP}),
            }
        }

    RETURN_TYPES = ("METACANVAS_PLANNER",)
    RETURN_NAMES = ("planner",)
    OUTPUT_TOOLTIPS = ("The frozen MLLM planner; connect it to Plan Canvas.",)
    FUNCTION = "load"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Loads the multimodal LLM (Qwen2.5-VL) that reads the prompt and plans the image on learnable "
                   "canvas tokens. The planner stays frozen; it replaces the backbone's own text encoder.")

    @classmethod
    def VALIDATE_INPUTS(cls, planner):
        return _listed(planner_choices(), planner, f"{PLANNER_LOADER}: planner", "LLM")

    def load(self, planner: str, dtype: str = "auto", device: str = "auto"):
        with reported_as(PLANNER_LOADER):
            folder = resolve(planner_choices(), planner, "planner", "LLM")
            dev = torch_device(device)
            dt = torch_dtype(dtype, dev)

            def load():
                from metacanvas_core.planner import Planner

                model = Planner.from_pretrained(folder, dtype=dt, device=initial_device(dev))
                manage(model, "MetaCanvasPlanner", dev, offload_device(dev), model=model.model)
                return model

            return (_shared(("planner", str(folder.resolve()), dt, dev), load),)


class MetaCanvasBackboneLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backbone": (list(backbone_choices()), {
                    "tooltip": "The diffusion backbone: a built-in tiny SANA (images), FLUX.1-Kontext (editing, "
                               "flux_edit) or Wan 2.2 (clips, wan_t2v; widened for video editing and in-context video, "
                               "wan_video_context), or a diffusers pipeline folder (model_index.json, transformer/, "
                               "vae/, scheduler/) in ComfyUI/models/diffusers: SANA, FLUX.1-Kontext or Wan 2.2 TI2V. "
                               "Its own text encoder is never loaded: the planner takes its place.",
                }),
                "dtype": (DTYPES, {"default": "auto", "tooltip": _DTYPE_TIP}),
                "device": (DEVICES, {"default": "auto", "tooltip": _DEVICE_TIP}),
            }
        }

    RETURN_TYPES = ("METACANVAS_BACKBONE",)
    RETURN_NAMES = ("backbone",)
    OUTPUT_TOOLTIPS = ("The diffusion transformer, VAE and scheduler; add MetaCanvas weights with Inject into "
                       "Backbone.",)
    FUNCTION = "load"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Loads a diffusion backbone (DiT + VAE + flow-matching scheduler) from a diffusers folder. "
                   "MetaCanvas weights are added to it with Inject into Backbone, as a LoRA is added to a MODEL.")

    @classmethod
    def VALIDATE_INPUTS(cls, backbone):
        return _listed(backbone_choices(), backbone, f"{BACKBONE_LOADER}: backbone", "diffusers")

    def load(self, backbone: str, dtype: str = "auto", device: str = "auto"):
        with reported_as(BACKBONE_LOADER):
            folder = resolve(backbone_choices(), backbone, "backbone", "diffusers")
            dev = torch_device(device)
            dt = torch_dtype(dtype, dev)

            from metacanvas_core.sampling import InjectedBackbone

            def load():
                from metacanvas_core.backbones import load_backbone

                model = load_backbone(folder, dtype=dt, device=initial_device(dev))
                manage(model, "MetaCanvasBackbone", dev, offload_device(dev),
                       transformer=model.transformer, vae=model.vae)
                return model

            adapter = _shared(("backbone", str(folder.resolve()), dt, dev), load)
            return (InjectedBackbone(adapter),)


class MetaCanvasConnectorLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weights": (list(connector_choices()), {
                    "tooltip": "MetaCanvas weights (canvas tokens, text connector, canvas connector and any DiT "
                               "weights trained with them): a built-in tiny file, or a .safetensors file in "
                               "ComfyUI/models/metacanvas. 'metacanvas' weights plan on a canvas; 'global' weights "
                               "are the text-only baseline; '_t2i' weights go with a SANA backbone, '_edit' with the "
                               "tiny FLUX.1-Kontext, '_t2v' (3 keyframes; '_k1': one canvas for every frame) with the "
                               "tiny Wan, '_video_context' with the widened tiny Wan.",
                }),
            }
        }

    RETURN_TYPES = ("METACANVAS_CONNECTOR",)
    RETURN_NAMES = ("connector",)
    OUTPUT_TOOLTIPS = ("The MetaCanvas weights; use the same ones for Plan Canvas and Inject into Backbone.",)
    FUNCTION = "load"
    CATEGORY = "MetaCanvas"
    DESCRIPTION = ("Loads MetaCanvas weights: the bridge between the planner and the backbone. Their metadata names "
                   "the backbone and planner they were trained for; a mismatch is reported by the nodes that use them.")

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        choices = connector_choices()
        if weights in choices:
            return True
        return _listed(choices, weights, f"{WEIGHTS_LOADER}: weights", "metacanvas", refused_weights())

    def load(self, weights: str):
        with reported_as(WEIGHTS_LOADER):
            from metacanvas_core.checkpoints import load_connector

            path = resolve(connector_choices(), weights, "MetaCanvas weights", "metacanvas", refused_weights())
            # Loaded once on the CPU in fp32 (a few MB); the nodes that run it take a copy on their device.
            key = ("connector", str(path.resolve()), path.stat().st_mtime_ns)
            return (_shared(key, lambda: load_connector(path, device="cpu", dtype=torch.float32)),)


NODE_CLASS_MAPPINGS = {
    "MetaCanvasPlannerLoader": MetaCanvasPlannerLoader,
    "MetaCanvasBackboneLoader": MetaCanvasBackboneLoader,
    "MetaCanvasConnectorLoader": MetaCanvasConnectorLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MetaCanvasPlannerLoader": PLANNER_LOADER,
    "MetaCanvasBackboneLoader": BACKBONE_LOADER,
    "MetaCanvasConnectorLoader": WEIGHTS_LOADER,
}

"""Run a workflow saved by ComfyUI's editor (the LiteGraph format) through the node classes, without ComfyUI.

The conversion follows what the editor's Run button does (`graphToPrompt`):
- every node that is not muted/bypassed and not a frontend-only node (notes, reroutes) becomes a prompt entry;
- widget values are read from `widgets_values` *by position*, in the order the editor creates widgets: required
  then optional inputs as declared by INPUT_TYPES, skipping socket-only types, and with one extra value right after
  an INT that has `control_after_generate` (the "fixed"/"randomize"/... choice, which is never sent);
- an input with a link (widget inputs too) takes `[from_node_id, from_slot]` of that link instead.

Execution mirrors ComfyUI's: inputs are checked as the server does (required present, combo values listed,
numbers within min/max, VALIDATE_INPUTS), only output nodes and what they depend on run, in dependency order, and
outputs are cached under a signature of the node's class and inputs (upstream nodes by their own signature), so a
re-run only executes nodes whose inputs changed.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MUTED, BYPASSED = 2, 4


# -- stand-ins for the few ComfyUI core nodes the workflows use (same inputs as ComfyUI declares them) ----------


class SaveImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    def save_images(self, images, filename_prefix="ComfyUI"):
        return {"ui": {"images": images, "filename_prefix": filename_prefix}}


class PreviewImage(SaveImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images, filename_prefix="preview"):
        return {"ui": {"images": images}}


class PrimitiveStringMultiline:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"multiline": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    def execute(self, value):
        return (value,)


@dataclass
class Video:
    """What ComfyUI's CreateVideo hands on (a VideoFromComponents): the frames and their rate."""

    images: object
    frame_rate: float


class CreateVideo:
    """comfy_extras/nodes_video.py's CreateVideo (a schema node): images, fps, optional audio -> VIDEO."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0,
                                                                      "step": 1.0})},
                "optional": {"audio": ("AUDIO",)}}

    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "execute"

    def execute(self, images, fps, audio=None):
        return (Video(images, fps),)


class SaveVideo:
    """comfy_extras/nodes_video.py's SaveVideo: the UI gets the frames here (ComfyUI writes an .mp4 instead)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
                             "format": (["auto", "mp4"], {"default": "auto"}),
                             "codec": (["auto", "h264"], {"default": "auto"})}}

    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True

    def execute(self, video, filename_prefix, format, codec):
        return {"ui": {"images": video.images, "frame_rate": video.frame_rate, "filename_prefix": filename_prefix}}


class ImageBatch:
    """nodes.py's ImageBatch: two IMAGE batches -> one (ComfyUI first scales image2 to image1's size; the stand-in
    takes same-size batches only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    def batch(self, image1, image2):
        import torch

        if image1.shape[1:] != image2.shape[1:]:
            raise NotImplementedError("ImageBatch stand-in: give two batches of one size (ComfyUI would rescale)")
        return (torch.cat((image1, image2), dim=0),)


class _NeedsComfyUI:
    """Declared as ComfyUI declares them (so the editor-format checks read their widgets); they sample ComfyUI's own
    models, so running them needs a real ComfyUI (tests/test_native_comfyui.py, the harness)."""

    FUNCTION = "run"

    def run(self, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} runs in a real ComfyUI only")


class KSampler(_NeedsComfyUI):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "seed": ("INT", {"default": 0, "control_after_generate": True}),
            "steps": ("INT", {"default": 20}), "cfg": ("FLOAT", {"default": 8.0}),
            "sampler_name": (["euler", "dpmpp_2m", "uni_pc"],), "scheduler": (["simple", "normal", "beta"],),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("LATENT",)


class VAEDecode(_NeedsComfyUI):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    RETURN_TYPES = ("IMAGE",)


class VAEEncode(_NeedsComfyUI):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    RETURN_TYPES = ("LATENT",)


class ReferenceLatent(_NeedsComfyUI):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}, "optional": {"latent": ("LATENT",)}}

    RETURN_TYPES = ("CONDITIONING",)


NEEDS_COMFYUI = {"KSampler", "VAEDecode", "VAEEncode", "ReferenceLatent"}

CORE_STAND_INS = {"KSampler": KSampler, "VAEDecode": VAEDecode, "VAEEncode": VAEEncode,
                  "ReferenceLatent": ReferenceLatent, "SaveImage": SaveImage, "PreviewImage": PreviewImage,
                  "PrimitiveStringMultiline": PrimitiveStringMultiline, "CreateVideo": CreateVideo,
                  "SaveVideo": SaveVideo, "ImageBatch": ImageBatch}


# -- editor format -> prompt -----------------------------------------------------------------------------------


def is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if opts.get("forceInput"):  # a socket only, as ComfyUI draws it
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def has_control_widget(name: str, spec) -> bool:
    opts = spec[1] if len(spec) > 1 else {}
    return spec[0] == "INT" and (opts.get("control_after_generate", False) or name in ("seed", "noise_seed"))


def widget_layout(cls) -> list[str | None]:
    """Names of the widget values in `widgets_values` order; None marks a control_after_generate value."""
    layout: list[str | None] = []
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            if is_widget(spec):
                layout.append(name)
                if has_control_widget(name, spec):
                    layout.append(None)
    return layout


def to_prompt(workflow: dict, classes: dict) -> dict[str, dict]:
    """The API prompt the editor would queue for `workflow`."""
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def source(link_id):
        """Follow a link back through reroutes to the producing node (None: it comes from a muted node)."""
        _, from_node, from_slot, *_ = links[link_id]
        node = nodes[from_node]
        if node["type"] == "Reroute":
            return source(node["inputs"][0]["link"])
        if node.get("mode", 0) == MUTED:
            return None
        if node.get("mode", 0) == BYPASSED:
            raise NotImplementedError(f"node {from_node} is bypassed: bypass is not modelled here")
        return str(from_node), from_slot

    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        if node["type"] not in classes:
            raise KeyError(f"node {node['id']} has unknown type {node['type']!r} (a missing node in the editor)")
        cls = classes[node["type"]]
        values = list(node.get("widgets_values") or [])
        layout = widget_layout(cls)
        if len(values) != len(layout):
            raise ValueError(
                f"node {node['id']} ({node['type']}): {len(values)} widget values for widgets {layout}"
            )
        inputs = {name: value for name, value in zip(layout, values) if name is not None}
        for index, slot in enumerate(node.get("inputs", [])):
            if slot.get("link") is None:
                continue
            link = links[slot["link"]]
            if (link[3], link[4]) != (node["id"], index):
                raise ValueError(
                    f"link {link[0]} ends at {link[3]}:{link[4]} but node {node['id']} input {index} holds it"
                )
            origin = source(slot["link"])
            if origin is not None:
                inputs[slot["name"]] = list(origin)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# -- validation, as the server does before running ---------------------------------------------------------------


def validate(prompt: dict, classes: dict) -> None:
    errors = []
    for node_id, entry in prompt.items():
        cls = classes[entry["class_type"]]
        types = cls.INPUT_TYPES()
        inputs = entry["inputs"]
        custom = inspect.getfullargspec(cls.VALIDATE_INPUTS).args if hasattr(cls, "VALIDATE_INPUTS") else []
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                if name not in inputs:
                    if section == "required":
                        errors.append(f"node {node_id}: required input {name!r} missing")
                    continue
                value = inputs[name]
                if isinstance(value, list) and not isinstance(spec[0], (list, tuple)):
                    from_node, slot = value
                    produced = classes[prompt[from_node]["class_type"]].RETURN_TYPES[slot]
                    if produced != spec[0]:
                        errors.append(f"node {node_id}: {name!r} wants {spec[0]}, gets {produced}")
                    continue
                if name in custom:
                    continue  # the node's own VALIDATE_INPUTS replaces the default checks, as in ComfyUI
                opts = spec[1] if len(spec) > 1 else {}
                if isinstance(spec[0], (list, tuple)) and value not in spec[0]:
                    errors.append(f"node {node_id}: {name!r} value {value!r} not in list")
                if spec[0] in ("INT", "FLOAT"):
                    if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
                        bounds = f"[{opts.get('min')}, {opts.get('max')}]"
                        errors.append(f"node {node_id}: {name!r} value {value} outside {bounds}")
        if custom:
            args = {k: v for k, v in inputs.items() if k in custom and not isinstance(v, list)}
            result = cls.VALIDATE_INPUTS(**args)
            if result is not True:
                errors.append(f"node {node_id}: {result}")
    if errors:
        raise ValueError("prompt failed validation: " + "; ".join(errors))


# -- execution with ComfyUI-like caching ---------------------------------------------------------------------------


@dataclass
class Cache:
    """Outputs by input signature; survives between runs like the server's cache between queued prompts."""

    outputs: dict = field(default_factory=dict)


@dataclass
class Result:
    outputs: dict[str, tuple]  # node id -> its return tuple
    ui: dict[str, dict]  # output node id -> its "ui" dict
    executed: list[str]  # node ids that actually ran (not served from the cache)
    prompt: dict


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def execution_order(prompt: dict, classes: dict) -> list[str]:
    """Output nodes and everything they depend on, dependencies first (what ComfyUI executes)."""
    order: list[str] = []

    def visit(node_id, stack=()):
        if node_id in order:
            return
        if node_id in stack:
            raise ValueError(f"cycle through node {node_id}")
        for value in prompt[node_id]["inputs"].values():
            if _is_link(value):
                visit(value[0], stack + (node_id,))
        order.append(node_id)

    for node_id, entry in prompt.items():
        if getattr(classes[entry["class_type"]], "OUTPUT_NODE", False):
            visit(node_id)
    if not order:
        raise ValueError("prompt has no output nodes")
    return order


def execute(prompt: dict, classes: dict, cache: Cache | None = None) -> Result:
    cache = cache if cache is not None else Cache()
    validate(prompt, classes)
    order = execution_order(prompt, classes)
    signatures: dict[str, tuple] = {}
    outputs: dict[str, tuple] = {}
    ui: dict[str, dict] = {}
    executed: list[str] = []
    for node_id in order:
        entry = prompt[node_id]
        cls = classes[entry["class_type"]]
        args, sig = {}, [entry["class_type"]]
        for name, value in sorted(entry["inputs"].items()):
            if _is_link(value):
                from_node, slot = value
                args[name] = outputs[from_node][slot]
                sig.append((name, signatures[from_node], slot))
            else:
                args[name] = value
                sig.append((name, json.dumps(value)))
        if getattr(cls, "OUTPUT_NODE", False):
            sig.append(("node", node_id))  # output nodes are keyed per node in the UI
        signature = tuple(sig)
        signatures[node_id] = signature
        if signature in cache.outputs:
            result = cache.outputs[signature]
        else:
            known = cls.INPUT_TYPES()
            accepted = {**known.get("required", {}), **known.get("optional", {})}
            result = getattr(cls(), cls.FUNCTION)(**{k: v for k, v in args.items() if k in accepted})
            cache.outputs[signature] = result
            executed.append(node_id)
        if isinstance(result, dict):
            ui[node_id] = result.get("ui", {})
            result = tuple(result.get("result", ()))
        if len(result) != len(cls.RETURN_TYPES):
            raise ValueError(f"node {node_id} returned {len(result)} values for {cls.RETURN_TYPES}")
        outputs[node_id] = result
    return Result(outputs, ui, executed, prompt)


def load_workflow(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def run_workflow(workflow: dict, classes: dict, cache: Cache | None = None) -> Result:
    """Convert as the editor does and execute. `classes`: the pack's NODE_CLASS_MAPPINGS (core stand-ins added)."""
    classes = {**CORE_STAND_INS, **classes}
    return execute(to_prompt(workflow, classes), classes, cache)


PACK_DIR = Path(__file__).resolve().parent.parent
PACK_NAME = "ComfyUI-MetaCanvas"


def load_pack(name: str = PACK_NAME):
    """Import the pack the way ComfyUI imports custom_nodes/<folder>: a package from its __init__.py file.

    (Never `import nodes`: that name is ComfyUI's own module; the pack reaches its nodes/ relatively.)
    """
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACK_DIR / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def call(key: str, **inputs):
    """Run one node of the pack as ComfyUI calls it: its FUNCTION on a fresh instance."""
    cls = load_pack().NODE_CLASS_MAPPINGS[key]
    return getattr(cls(), cls.FUNCTION)(**inputs)


def expect_error(node: str, *fragments: str):
    """pytest.raises for a node error: the message starts with the node's display name and holds each fragment."""
    import re

    import pytest

    pattern = "^" + re.escape(f"{node}: ") + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(ValueError, match=re.compile(pattern, re.S))

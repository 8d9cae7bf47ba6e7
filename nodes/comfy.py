"""Everything that touches ComfyUI lives here, imported lazily, with a plain fallback when ComfyUI is absent.

Model folders (`folder_paths`), devices and memory (`comfy.model_management`, `comfy.model_patcher`), progress
with live previews (`comfy.utils.ProgressBar`) and the interrupt check. The other node files call these helpers
and never import ComfyUI themselves, so the pack's nodes run (and are tested) without ComfyUI installed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from metacanvas_core.builtin import BUILTIN_NAME, PLANNER, builtin_backbones, builtin_connectors
from metacanvas_core.errors import MetaCanvasError, MetaCanvasWarning

LLM_FOLDER = "LLM"  # ComfyUI/models/LLM: Qwen2.5-VL planner folders
DIFFUSERS_FOLDER = "diffusers"  # ComfyUI/models/diffusers: diffusers pipeline folders (ComfyUI's own name)
METACANVAS_FOLDER = "metacanvas"  # ComfyUI/models/metacanvas: MetaCanvas weights (*.safetensors)

DTYPES = ["auto", "fp32", "fp16", "bf16"]
DEVICES = ["auto", "cpu", "cuda"]
_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class NodeError(ValueError):
    """A bad input, reported the way users read it: '<node display name>: what is wrong and what to change'."""


def node_error(node: str, message: str) -> NodeError:
    message = str(message)
    return NodeError(message if message.startswith(f"{node}:") else f"{node}: {message}")


@contextlib.contextmanager
def reported_as(node: str) -> Iterator[None]:
    """Re-raise the library's MetaCanvasError as '<node>: ...'. Everything else (ComfyUI's interrupt included)
    passes through untouched."""
    try:
        yield
    except MetaCanvasError as e:
        raise node_error(node, str(e)) from e


@contextlib.contextmanager
def notices_shown(node: str) -> Iterator[None]:
    """Show the library's MetaCanvasWarnings raised inside as they happen: on the console always, and as the
    running node's text in the editor inside ComfyUI. Every time, not once per session as Python's default would."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MetaCanvasWarning):
            show_text(node, str(message))
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", MetaCanvasWarning)
        warnings.showwarning = show
        yield


def show_text(node: str, text: str) -> None:
    """A notice for the user: the console, and inside ComfyUI the text area of the node that is running
    (PromptServer.send_progress_text, as ComfyUI's own Get Image Size node does)."""
    print(f"[MetaCanvas] {node}: warning: {text}")
    if not in_comfyui():
        return
    try:
        from comfy_execution.utils import get_executing_context  # noqa: PLC0415  (ComfyUI only)
        from server import PromptServer  # noqa: PLC0415  (ComfyUI only)
    except ImportError:  # an older ComfyUI: the console line has to do
        return
    context = get_executing_context()
    if context is not None and getattr(PromptServer, "instance", None) is not None:
        PromptServer.instance.send_progress_text(f"{node}: {text}", context.node_id)


# ---------------------------------------------------------------------------------------------------------------
# Is ComfyUI here?


def _model_management():
    try:
        import comfy.model_management as mm  # noqa: PLC0415  (ComfyUI only)
    except ImportError:
        return None
    return mm


def _folder_paths():
    try:
        import folder_paths  # noqa: PLC0415  (ComfyUI only)
    except ImportError:
        return None
    return folder_paths


def in_comfyui() -> bool:
    return _model_management() is not None


# ---------------------------------------------------------------------------------------------------------------
# Model folders


def register_model_folders() -> None:
    """Make models/LLM and models/metacanvas known to ComfyUI (extra_model_paths.yaml can add more). Idempotent."""
    fp = _folder_paths()
    if fp is None:
        return
    for name in (LLM_FOLDER, METACANVAS_FOLDER):
        path = os.path.join(fp.models_dir, name)
        known = fp.folder_names_and_paths.get(name)
        if known is None or path not in known[0]:
            fp.add_model_folder_path(name, path, is_default=True)
    paths, exts = fp.folder_names_and_paths[METACANVAS_FOLDER]
    if not exts:  # a folder added by name only accepts any file: keep it to weights files
        fp.folder_names_and_paths[METACANVAS_FOLDER] = (paths, {".safetensors"})


def _search_paths(name: str) -> list[str]:
    fp = _folder_paths()
    if fp is None:
        return []
    register_model_folders()
    try:
        return [p for p in fp.get_folder_paths(name) if os.path.isdir(p)]
    except KeyError:
        return []


def _model_folders(name: str, marker: str) -> dict[str, Path]:
    """Relative folder name -> path for every folder under ComfyUI's `name` model folders holding `marker`."""
    found: dict[str, Path] = {}
    for root in _search_paths(name):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if marker in filenames:
                rel = os.path.relpath(dirpath, root)
                if rel != ".":
                    found.setdefault(rel.replace(os.sep, "/"), Path(dirpath))
                dirnames[:] = []  # a model folder's subfolders are its parts, not more models
    return dict(sorted(found.items()))


def planner_choices() -> dict[str, Path]:
    """'built-in tiny: planner' first, then Qwen2.5-VL folders (with config.json) under models/LLM."""
    return {f"{BUILTIN_NAME}: {PLANNER.name}": PLANNER, **_model_folders(LLM_FOLDER, "config.json")}


def backbone_choices() -> dict[str, Path]:
    """The built-in tiny diffusers folders first, then diffusers folders (with model_index.json) of models/diffusers."""
    return {**builtin_backbones(), **_model_folders(DIFFUSERS_FOLDER, "model_index.json")}


def _weights_files(wanted) -> dict[str, Path]:
    """Relative name -> path of the files under models/metacanvas that `wanted(name)` accepts, DiT parts excluded."""
    from metacanvas_core.checkpoints import is_dit_part  # (the pack imports nothing heavy at ComfyUI's start)

    files: dict[str, Path] = {}
    for root in _search_paths(METACANVAS_FOLDER):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            # (the DiT part beside a weights file goes with it: never listed as weights of its own)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not is_dit_part(Path(dirpath) / d))
            for f in filenames:
                if wanted(f) and not is_dit_part(Path(f)):
                    rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                    files.setdefault(rel, Path(dirpath) / f)
    return dict(sorted(files.items()))


def connector_choices() -> dict[str, Path]:
    """The shipped MetaCanvas weights first, then *.safetensors under models/metacanvas."""
    return {**builtin_connectors(), **_weights_files(lambda f: f.lower().endswith(".safetensors"))}


def refused_weights() -> dict[str, Path]:
    """Pickle files (.pt, .ckpt, .bin, ...) under models/metacanvas: never listed nor loaded, but named as such when
    a workflow asks for one (it is there, so 'not found' would send the user looking in the wrong place)."""
    from metacanvas_core.checkpoints import is_pickle

    return _weights_files(is_pickle)


def resolve(choices: dict[str, Path], name: str, what: str, where: str,
            refused: dict[str, Path] | None = None) -> Path:
    """The path behind a list entry, or an error that says where such models go (or, for a file in `refused`,
    why it is not loaded)."""
    if name in choices:
        return choices[name]
    if refused and name in refused:
        from metacanvas_core.checkpoints import pickle_refusal

        raise MetaCanvasError(f"{what} {name!r} is in ComfyUI/models/{where} but {pickle_refusal(refused[name])}")
    listed = ", ".join(repr(c) for c in list(choices)[:6])
    raise MetaCanvasError(
        f"{what} {name!r} was not found; put it in ComfyUI/models/{where} (then refresh the page, R) or pick one "
        f"of: {listed}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Devices and dtypes


def torch_device(choice: str) -> torch.device:
    """'auto' is ComfyUI's own device choice inside ComfyUI, the CPU outside."""
    if choice == "auto":
        mm = _model_management()
        return torch.device(mm.get_torch_device()) if mm is not None else torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise MetaCanvasError("device 'cuda' is not available on this machine: choose auto or cpu")
    if choice not in DEVICES:
        raise MetaCanvasError(f"unknown device {choice!r}: choose one of {DEVICES}")
    return torch.device(choice)


def offload_device(load: torch.device) -> torch.device:
    mm = _model_management()
    if mm is None or load.type == "cpu":
        return load
    return torch.device(mm.unet_offload_device())


def torch_dtype(choice: str, device: torch.device) -> torch.dtype:
    """'auto': fp32 on the CPU; bf16 where the GPU supports it, else fp16."""
    if choice in _DTYPE:
        return _DTYPE[choice]
    if choice != "auto":
        raise MetaCanvasError(f"unknown dtype {choice!r}: choose one of {DTYPES}")
    if device.type == "cpu":
        return torch.float32
    mm = _model_management()
    if mm is not None:
        return torch.bfloat16 if mm.should_use_bf16(device) else torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


# ---------------------------------------------------------------------------------------------------------------
# Memory: ModelPatcher so ComfyUI's model management can load, offload and free our modules


class _Modules(torch.nn.Module):
    """A plain container: ModelPatcher sets `.device` on the model it manages, which diffusers and transformers
    models expose as a read-only property."""

    def __init__(self, device: torch.device, **modules: torch.nn.Module) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.device = device


_patchers: "weakref.WeakKeyDictionary[object, object]" = weakref.WeakKeyDictionary()


def manage(owner: object, name: str, load: torch.device, offload: torch.device, **modules: torch.nn.Module) -> None:
    """Inside ComfyUI, hand `modules` (already on `offload`) to a ModelPatcher kept alongside `owner`. `name` is
    what ComfyUI's log calls them ("Requested to load <name>")."""
    if not in_comfyui():
        return
    from comfy.model_patcher import ModelPatcher  # noqa: PLC0415  (ComfyUI only)

    holder = type(name, (_Modules,), {})(offload, **modules)
    _patchers[owner] = ModelPatcher(holder, load_device=load, offload_device=offload)


def patcher_of(owner: object):
    return _patchers.get(owner)


def load_for_use(*owners: object, memory_required: int = 0) -> None:
    """Before running `owners`' modules: let ComfyUI make room (for them and `memory_required` bytes of the run's
    own tensors) and move them to their load device."""
    patchers = [p for p in (patcher_of(o) for o in owners) if p is not None]
    mm = _model_management()
    if mm is None or not patchers:
        return
    # Full loads: our modules are not built from comfy.ops, so they cannot run partially offloaded.
    mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)


def initial_device(load: torch.device) -> torch.device:
    """Where a loader puts new weights: ComfyUI moves them to the load device on first use."""
    return offload_device(load) if in_comfyui() else load


# ---------------------------------------------------------------------------------------------------------------
# Cancel and progress


def interrupt_check() -> Callable[[], bool]:
    """A cancel callback for the sampler: inside ComfyUI it raises ComfyUI's own interrupt exception (which
    must reach ComfyUI untouched) as soon as the user presses cancel; outside it never cancels."""
    mm = _model_management()
    if mm is None:
        return lambda: False
    return lambda: (mm.throw_exception_if_processing_interrupted(), False)[1]


def progress_bar(total: int):
    """ComfyUI's progress bar (with node id from the executing context), or None outside ComfyUI."""
    try:
        import comfy.utils  # noqa: PLC0415  (ComfyUI only)
    except ImportError:
        return None
    return comfy.utils.ProgressBar(total)


def preview_resolution() -> int:
    try:
        from comfy.cli_args import args  # noqa: PLC0415  (ComfyUI only)
    except ImportError:
        return 512
    return int(getattr(args, "preview_size", 512) or 512)


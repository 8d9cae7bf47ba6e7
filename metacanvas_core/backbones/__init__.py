"""Backbone adapters, one per architecture, and the loader that picks one from a diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..errors import MetaCanvasError
from .base import BackboneAdapter, read_model_index
from .flux import FluxKontextBackbone
from .sana import SanaBackbone
from .wan import WanBackbone

ADAPTERS: dict[str, type[BackboneAdapter]] = {
    a.transformer_class: a for a in (SanaBackbone, WanBackbone, FluxKontextBackbone)
}


def load_backbone(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> BackboneAdapter:
    """Load a diffusers pipeline folder (model_index.json, transformer/, vae/, scheduler/) of a known architecture."""
    folder = Path(folder)
    read_model_index(folder)
    cfg_path = folder / "transformer" / "config.json"
    if not cfg_path.is_file():
        raise MetaCanvasError(f"backbone folder {str(folder)!r} has no transformer/config.json")
    cls_name = json.loads(cfg_path.read_text()).get("_class_name")
    if cls_name not in ADAPTERS:
        raise MetaCanvasError(
            f"backbone {folder.name!r} has a {cls_name} transformer; MetaCanvas supports {sorted(ADAPTERS)}"
        )
    _refuse_pickle(folder)
    try:
        return ADAPTERS[cls_name].from_folder(folder, dtype, device)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise MetaCanvasError(
            f"could not load the backbone from {str(folder)!r} ({e}): the folder is incomplete or corrupted; "
            "re-download or re-copy it"
        ) from e


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickle(folder: Path) -> None:
    """Weights are read from safetensors only (adapters pass use_safetensors=True): a pickle file can run code when
    loaded. Say so plainly when a part of the folder has nothing else, instead of "file not found"."""
    for part in ("transformer", "vae"):
        files = [p for p in (folder / part).glob("*") if p.is_file()]
        if not any(p.suffix == ".safetensors" for p in files):
            pickled = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
            if pickled:
                raise MetaCanvasError(
                    f"backbone {folder.name!r}: {part}/ holds only pickle weights ({', '.join(pickled[:3])}); "
                    "MetaCanvas loads safetensors only, since pickle can run code: download the safetensors "
                    "version of this model, or convert the weights with safetensors' own tools"
                )


__all__ = ["ADAPTERS", "BackboneAdapter", "FluxKontextBackbone", "SanaBackbone", "WanBackbone", "load_backbone"]

"""MetaCanvas weights on disk: one safetensors file with JSON metadata, never pickle.

Tensors: ``canvas_tokens``, ``text_connector.*``, ``canvas_encoder.*``, ``canvas_fuser.*`` (the connector) and,
where the DiT was trained too, ``transformer.*`` (full weights of the DiT that goes with it). Metadata says what
the weights belong to (backbone architecture and width, planner width, canvas grid) and how they were trained,
so a mismatch is a clear error instead of a shape crash.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .connectors import ConnectorConfig, MetaCanvasConnector
from .errors import MetaCanvasError

FORMAT = "metacanvas"
FORMAT_VERSION = 1
DIT_PREFIX = "transformer."


@dataclass
class LoadedConnector:
    """A MetaCanvas checkpoint in memory: the connector module, DiT weights (if any) and what they belong to."""

    connector: MetaCanvasConnector
    backbone_architecture: str
    name: str
    dit_state: dict[str, torch.Tensor] = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    backbone_config: dict = field(default_factory=dict)
    _placed: dict = field(default_factory=dict, repr=False, compare=False)

    def on(self, device: torch.device | str, dtype: torch.dtype) -> "LoadedConnector":
        """These weights with the connector on `device` in `dtype`: itself if already there, else a copy made
        once and kept for as long as this object lives (the DiT weights are cast when swapped in)."""
        param = next(self.connector.parameters())
        if param.device == torch.device(device) and param.dtype == dtype:
            return self
        key = (str(device), dtype)
        if key not in self._placed:
            module = MetaCanvasConnector(self.config)
            module.load_state_dict(self.connector.state_dict())
            module.to(device=device, dtype=dtype).eval().requires_grad_(False)
            self._placed[key] = dataclasses.replace(self, connector=module, _placed={})
        return self._placed[key]

    @property
    def config(self) -> ConnectorConfig:
        return self.connector.config

    @property
    def method(self) -> str:
        return "metacanvas" if self.config.use_canvas else "global"

    def require_canvas(self, use: str, fix: str) -> None:
        """Raise unless these weights plan on a canvas; `use` says what needed it, `fix` the way out."""
        if not self.config.use_canvas:
            raise MetaCanvasError(f"weights {self.name!r} ('{self.method}', text only) have no canvas {use}: {fix}")

    def check_backbone(self, backbone, where: str = "connector") -> None:
        """Raise unless these weights were made for `backbone` (architecture and widths)."""
        cfg = self.config
        if backbone.architecture != self.backbone_architecture:
            raise MetaCanvasError(
                f"{where} {self.name!r} was trained for a {self.backbone_architecture} backbone, but the backbone "
                f"{backbone.name!r} is {backbone.architecture}: load a {self.backbone_architecture} backbone or "
                f"MetaCanvas weights made for {backbone.architecture}"
            )
        if (backbone.dit_dim, backbone.caption_channels) != (cfg.dit_dim, cfg.caption_channels):
            raise MetaCanvasError(
                f"{where} {self.name!r} expects a DiT of width {cfg.dit_dim} with {cfg.caption_channels} caption "
                f"channels, but backbone {backbone.name!r} has width {backbone.dit_dim} and "
                f"{backbone.caption_channels}: it belongs to another checkpoint of the same architecture"
            )
        have = backbone.fingerprint()
        diff = {k: (v, have[k]) for k, v in self.backbone_config.items() if k in have and have[k] != v}
        if diff:
            detail = ", ".join(f"{k}: trained with {a!r}, this backbone has {b!r}"
                               for k, (a, b) in sorted(diff.items()))
            raise MetaCanvasError(
                f"{where} {self.name!r} was trained on another {self.backbone_architecture} DiT than {backbone.name!r} "
                f"({detail}): load the backbone these weights were trained with"
            )

    def check_planner(self, planner, where: str = "connector") -> None:
        if planner.hidden_size != self.config.planner_hidden:
            raise MetaCanvasError(
                f"{where} {self.name!r} was trained on a planner of hidden size {self.config.planner_hidden}, but "
                f"planner {planner.name!r} has {planner.hidden_size}: load the planner these weights were made for"
            )
        if self.connector.canvas_lora is not None:
            self.connector.canvas_lora.check(planner.language_model, planner.name, where=f"{where} {self.name!r}")


def save_connector(
    path: str | Path,
    connector: MetaCanvasConnector,
    backbone,
    dit_state: dict[str, torch.Tensor] | None = None,
    recipe: dict | None = None,
) -> None:
    """Write `connector` (and the DiT weights trained with it) for `backbone`, a BackboneAdapter."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in connector.state_dict().items()}
    for k, v in (dit_state or {}).items():
        tensors[DIT_PREFIX + k] = v.detach().contiguous().cpu()
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "method": "metacanvas" if connector.config.use_canvas else "global",
        "backbone_architecture": backbone.architecture,
        "backbone_config": json.dumps(backbone.fingerprint()),
        "planner_architecture": "qwen2_5_vl",
        "planner_hidden_size": str(connector.config.planner_hidden),
        "canvas_grid": json.dumps(connector.config.canvas_grid),
        "connector_config": json.dumps(connector.config.to_dict()),
        "training_recipe": json.dumps(recipe or {}),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise MetaCanvasError(f"MetaCanvas weights {str(path)!r} not found: pick a .safetensors file that exists")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise MetaCanvasError(
            f"{str(path)!r} is not a readable safetensors file ({e}); re-download or re-train it") from e
    if meta.get("format") != FORMAT:
        raise MetaCanvasError(
            f"{path.name!r} is a safetensors file but not MetaCanvas weights (no 'format: metacanvas' metadata); "
            "a LoRA or model checkpoint goes to its own loader"
        )
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise MetaCanvasError(f"{path.name!r} has format version {meta['format_version']}; update this node pack")
    return meta


def load_connector(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedConnector:
    path = Path(path)
    meta = read_metadata(path)
    cfg = ConnectorConfig(**json.loads(meta["connector_config"]))
    tensors = load_file(str(path), device="cpu")
    dit_state = {k[len(DIT_PREFIX):]: v for k, v in tensors.items() if k.startswith(DIT_PREFIX)}
    own = {k: v for k, v in tensors.items() if not k.startswith(DIT_PREFIX)}
    connector = MetaCanvasConnector(cfg)
    missing, unexpected = connector.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise MetaCanvasError(f"{path.name!r} is corrupted or incomplete: missing {missing}, unexpected {unexpected}")
    connector.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedConnector(
        connector, meta["backbone_architecture"], path.stem, dit_state,
        json.loads(meta.get("training_recipe", "{}")), json.loads(meta.get("backbone_config", "{}")),
    )

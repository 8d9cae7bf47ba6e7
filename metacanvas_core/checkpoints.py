"""MetaCanvas weights on disk: one safetensors file with JSON metadata, never pickle.

Tensors: ``canvas_tokens``, ``text_connector.*``, ``canvas_encoder.*``, ``canvas_fuser.*`` (the connector) and,
where the DiT was trained too, ``transformer.*`` (full weights of the DiT that goes with it). Metadata says what
the weights belong to (backbone architecture and width, planner width, canvas grid) and how they were trained,
so a mismatch is a clear error instead of a shape crash.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .connectors import ConnectorConfig, MetaCanvasConnector
from .errors import MetaCanvasError, MetaCanvasWarning

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
    trained_sizes: list[list[int]] = field(default_factory=list)  # [width, height(, frames)]; [] = not recorded
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
        own = backbone.transformer.state_dict()
        diff.update({f"tensor {k}": (tuple(v.shape), tuple(own[k].shape)) for k, v in self.dit_state.items()
                     if k in own and own[k].shape != v.shape})
        if diff:
            detail = ", ".join(f"{k}: trained with {a!r}, this backbone has {b!r}"
                               for k, (a, b) in sorted(diff.items()))
            raise MetaCanvasError(
                f"{where} {self.name!r} was trained on another {self.backbone_architecture} DiT than {backbone.name!r} "
                f"({detail}): load the backbone these weights were trained with"
            )

    def warn_if_untrained(self, width: int, height: int, frames: int = 1) -> None:
        """A MetaCanvasWarning when this size is far from every size the weights were trained at (files that do not
        record them: nothing). The canvas and the DiT only ever saw those token grids; far off, the plan tends to
        come out as scattered fragments rather than fail."""
        if not self.trained_sizes or any(_near(s, width, height, frames) for s in self.trained_sizes):
            return
        trained = ", ".join("x".join(map(str, s)) for s in self.trained_sizes)
        size = f"{width}x{height}" + (f"x{frames}" if frames > 1 else "")
        warnings.warn(
            f"MetaCanvas weights {self.name!r} were trained at {trained} (width x height), and {size} is far from "
            "that (another pixel count or aspect ratio): expect scattered fragments instead of the plan. Sample at a "
            "trained size, or train at this one", MetaCanvasWarning, stacklevel=3,
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
    trained_sizes: list[list[int]] | None = None,
) -> None:
    """Write `connector` (and the DiT weights trained with it) for `backbone`, a BackboneAdapter.

    `trained_sizes`: the output sizes the weights were trained at, each [width, height] (video: [width, height,
    frames]); sampling far from all of them warns (the plan and the DiT only saw those token grids)."""
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
    if trained_sizes:
        meta["trained_sizes"] = json.dumps(_sizes(trained_sizes, MetaCanvasError))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def _near(trained: list[int], width: int, height: int, frames: int) -> bool:
    """Within 2x the trained pixel count, 1.5x its aspect ratio and (video) 2x its frames."""
    tw, th, *tf = trained
    area, aspect = (width * height) / (tw * th), (width / height) / (tw / th)
    frames_ok = not tf or 0.5 <= frames / tf[0] <= 2
    return 0.5 <= area <= 2 and 1 / 1.5 <= aspect <= 1.5 and frames_ok


class _Invalid(Exception):
    """What is wrong with a file's metadata or tensors; `load_connector` words it for the user."""


def read_metadata(path: str | Path) -> dict[str, str]:
    """The raw metadata of a MetaCanvas weights file (checked to be one, of a version this pack reads)."""
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
    version = meta.get("format_version")
    if version is None or not version.isdigit() or int(version) < 1:
        raise _invalid(path, "format_version is missing" if version is None else f"format_version {version!r} is "
                       "not a positive whole number")
    if int(version) > FORMAT_VERSION:
        raise MetaCanvasError(f"{path.name!r} has format version {version}; update this node pack")
    return meta


def _invalid(path: Path, what: str) -> MetaCanvasError:
    return MetaCanvasError(f"{path.name!r}: this file is not valid MetaCanvas weights: {what}; re-download or "
                           "re-train it")


def _json(meta: dict[str, str], key: str, kind: type, default=None):
    if key not in meta:
        if default is None:
            raise _Invalid(f"the metadata has no {key}")
        return default
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise _Invalid(f"{key} is not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise _Invalid(f"{key} is a JSON {type(value).__name__}, not a {kind.__name__}")
    return value


def _sizes(sizes, error: type[Exception]) -> list[list[int]]:
    """`sizes` as a list of [width, height(, frames)] of positive whole numbers, else `error`."""
    ok = isinstance(sizes, (list, tuple)) and all(
        isinstance(s, (list, tuple)) and len(s) in (2, 3)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s) for s in sizes)
    if not ok:
        raise error(f"trained_sizes must be a list of [width, height] or [width, height, frames], got {sizes!r}")
    return [list(s) for s in sizes]


def _connector(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> MetaCanvasConnector:
    """The connector the metadata describes, holding `tensors` (shapes and names must match exactly)."""
    raw = _json(meta, "connector_config", dict)
    known = {f.name for f in dataclasses.fields(ConnectorConfig)}
    if set(raw) - known:
        raise _Invalid(f"connector_config has unknown keys {sorted(set(raw) - known)}")
    try:
        connector = MetaCanvasConnector(ConnectorConfig(**raw))
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:
        raise _Invalid(f"connector_config {raw} does not describe a connector ({e})") from None
    expected = connector.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _Invalid(f"its tensors do not match connector_config: missing {missing[:5]}, unexpected "
                       f"{unexpected[:5]}")
    wrong = [f"{k} {tuple(v.shape)} (the config needs {tuple(expected[k].shape)})"
             for k, v in tensors.items() if v.shape != expected[k].shape]
    if wrong:
        raise _Invalid(f"tensor shapes do not match connector_config: {', '.join(wrong[:3])}")
    connector.load_state_dict(tensors)
    return connector


def load_connector(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedConnector:
    """Load MetaCanvas weights. Every malformed file (metadata or tensors) is refused with one message that says
    what is wrong, never a raw KeyError/JSON/shape error from deep inside."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise _invalid(path, f"its tensors cannot be read ({e})") from e
    try:
        architecture = meta.get("backbone_architecture", "")
        if not architecture:
            raise _Invalid("the metadata has no backbone_architecture")
        dit_state = {k[len(DIT_PREFIX):]: v for k, v in tensors.items() if k.startswith(DIT_PREFIX)}
        connector = _connector(meta, {k: v for k, v in tensors.items() if not k.startswith(DIT_PREFIX)})
        recipe = _json(meta, "training_recipe", dict, {})
        backbone_config = _json(meta, "backbone_config", dict, {})
        sizes = _sizes(_json(meta, "trained_sizes", list, []), _Invalid)
    except _Invalid as e:
        raise _invalid(path, str(e)) from None
    connector.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedConnector(connector, architecture, path.stem, dit_state, recipe, backbone_config, sizes)

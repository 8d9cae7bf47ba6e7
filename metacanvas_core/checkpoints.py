"""MetaCanvas weights on disk: one small safetensors file with JSON metadata (never pickle), and beside it the DiT
part as it was trained.

The file holds the connector only: ``canvas_tokens``, ``text_connector.*``, ``canvas_encoder.*``,
``canvas_fuser.*`` (and a canvas-only planner LoRA). Its metadata says what the weights belong to (backbone
architecture and width, planner width, canvas grid), how they were trained, and what they do to the DiT (`dit`):
- nothing (`none`): the backbone's own DiT (global base weights);
- `lora`: a LoRA file `<name>_dit_lora.safetensors` in diffusers/peft keys (``transformer.<module>.lora_A.weight``),
  loaded onto the backbone's DiT once and switched on while sampling, as diffusers' `load_lora_adapter` does;
- `transformer`: a fine-tuned DiT, the folder `<name>_dit/` in the diffusers transformer layout (config.json +
  safetensors), loaded once like any backbone's transformer and used in place of the backbone's.
Format 1 files carried the whole DiT inside (``transformer.*`` tensors), swapped into the backbone for each run;
they still load, and `convert-weights` writes them in this format.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .connectors import ConnectorConfig, MetaCanvasConnector
from .errors import MetaCanvasError, MetaCanvasWarning

FORMAT = "metacanvas"
FORMAT_VERSION = 2
DIT_PREFIX = "transformer."  # format 1's DiT tensors inside the file; the LoRA file's keys
DIT_FOLDER, DIT_LORA = "{}_dit", "{}_dit_lora.safetensors"  # the DiT part beside `<name>.safetensors`
DIT_KINDS = ("none", "lora", "transformer", "inline")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")  # torch.save / pickle files: never opened


def is_pickle(path: str | Path) -> bool:
    """A file in one of pickle's formats (torch.save's .pt, .pth, .ckpt, .bin, ...), which this pack never opens."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def pickle_refusal(path: str | Path) -> str:
    """Why a pickle file is not loaded and how to convert it (the same words for the nodes and the command line)."""
    name = Path(path).name
    return (f"only .safetensors files are loaded, never a pickle such as {name!r} (opening one can run any code it "
            "holds). If you trust where it came from, convert it in a session you trust, in Python: "
            f"safetensors.torch.save_file(torch.load({name!r}, weights_only=True), "
            f"{Path(name).stem + '.safetensors'!r}, metadata=...) (MetaCanvas weights also carry their metadata: ask "
            "whoever made the file for its .safetensors)")


@dataclass(frozen=True)
class DitPart:
    """What MetaCanvas weights do to the backbone's DiT: nothing, a LoRA file, a fine-tuned transformer folder
    (beside the weights), or format 1's full tensors inside the file ("inline")."""

    kind: str = "none"
    path: Path | None = None


NO_DIT = DitPart()


def is_dit_part(path: Path) -> bool:
    """A DiT part that lives beside MetaCanvas weights (listed with them it would look like weights of its own)."""
    return path.name.endswith(DIT_LORA.format("")) or (path.name.endswith(DIT_FOLDER.format("")) and
                                                        (path / "config.json").is_file())


@dataclass
class MetaCanvasWeights:
    """MetaCanvas weights in memory: the connector module, DiT weights (if any) and what they belong to."""

    connector: MetaCanvasConnector
    backbone_architecture: str
    name: str
    dit_state: dict[str, torch.Tensor] = field(default_factory=dict)  # format 1 only: the DiT's tensors inside
    recipe: dict = field(default_factory=dict)
    backbone_config: dict = field(default_factory=dict)
    trained_sizes: list[list[int]] = field(default_factory=list)  # [width, height(, frames)]; [] = not recorded
    dit: DitPart = NO_DIT
    _placed: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dit_state and self.dit.kind == "none":
            object.__setattr__(self, "dit", DitPart("inline"))

    def dit_module(self, like: torch.nn.Module) -> torch.nn.Module:
        """The fine-tuned DiT of `transformer` weights, loaded once per device and dtype of `like` (the backbone's
        own transformer, whose class it is)."""
        key = ("dit", str(like.device), like.dtype)
        if key not in self._placed:
            from .backbones.base import pretrained_kwargs

            module = type(like).from_pretrained(self.dit.path, **pretrained_kwargs(like.dtype))
            self._placed[key] = module.to(like.device).eval().requires_grad_(False)
        return self._placed[key]

    def dit_lora_state(self) -> dict[str, torch.Tensor]:
        """The DiT LoRA's tensors (diffusers/peft keys), read once."""
        if "lora" not in self._placed:
            self._placed["lora"] = load_file(str(self.dit.path))
        return self._placed["lora"]

    def on(self, device: torch.device | str, dtype: torch.dtype) -> "MetaCanvasWeights":
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
            self._placed[key]._placed.update({k: v for k, v in self._placed.items() if not isinstance(k, tuple)
                                              or k[0] == "dit"})  # the DiT part is shared, not reloaded
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

    def check_backbone(self, backbone, where: str = "MetaCanvas weights") -> None:
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
        # (LoRA adapters other weights loaded onto this DiT do not change what its own tensors are)
        own = {k.replace(".base_layer.", "."): v for k, v in backbone.transformer.state_dict().items() if ".lora_" not in k}
        diff.update({f"tensor {k}": (tuple(v.shape), tuple(own[k].shape)) for k, v in self.dit_state.items()
                     if k in own and own[k].shape != v.shape})
        if self.dit.kind == "transformer":  # the folder's tensors (names and shapes, read from their headers)
            shapes = {}
            for f in sorted(self.dit.path.glob("*.safetensors")):
                with safe_open(str(f), framework="pt") as st:
                    shapes.update({k: tuple(st.get_slice(k).get_shape()) for k in st.keys()})
            diff.update({f"tensor {k}": (shapes.get(k, "none"), tuple(v.shape)) for k, v in own.items()
                         if shapes.get(k) != tuple(v.shape)})
        if self.dit.kind == "lora":
            targets = {k[len(DIT_PREFIX):].split(".lora_")[0] for k in self.dit_lora_state()}
            missing = sorted(targets - {n for n, _ in backbone.transformer.named_modules()})
            diff.update({f"LoRA target {n}": ("a module", "none") for n in missing[:3]})
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
        clips = any(len(s) == 3 for s in self.trained_sizes)
        size = f"{width}x{height}" + (f"x{frames}" if clips or frames > 1 else "")
        label = "width x height x frames" if clips else "width x height"
        warnings.warn(
            f"MetaCanvas weights {self.name!r} were trained at {trained} ({label}), and {size} is far from "
            "that (another pixel count or aspect ratio): expect scattered fragments instead of the plan. Sample at a "
            "trained size, or train at this one", MetaCanvasWarning, stacklevel=3,
        )

    def check_given_size(self, width: int, height: int, frames: int, where: str) -> None:
        """Refuse an input whose own size sets the output's (a clip to edit) when it is far from every size the
        weights were trained at: unlike a size asked for, it is rarely meant, and the run is long and gives
        fragments. Says what to pass instead; files that do not record their sizes: nothing."""
        if not self.trained_sizes or any(_near(s, width, height, frames) for s in self.trained_sizes):
            return
        closest = min(self.trained_sizes, key=lambda s: abs(math.log(width * height / (s[0] * s[1]))))
        tw, th, *tf = closest
        fixes = []
        if not _near([tw, th], width, height, frames):
            fix = f"downscale it to {tw}x{th} first (e.g. ComfyUI's Upscale Image node)"
            k = width // tw
            if k > 1 and width == k * tw and height == k * th:
                fix += (f"; it is {k}x the size it was made at, as generate writes what it makes enlarged (--upscale "
                        "8 by default): write it with --upscale 1")
            fixes.append(fix)
        if tf and not _near([width, height, tf[0]], width, height, frames):
            fixes.append(f"cut it to about {tf[0]} frames")
        trained = ", ".join("x".join(map(str, s)) for s in self.trained_sizes)
        label = "width x height x frames" if any(len(s) == 3 for s in self.trained_sizes) else "width x height"
        raise MetaCanvasError(
            f"{where} is {width}x{height}x{frames}, far from the {trained} ({label}) the MetaCanvas weights "
            f"{self.name!r} were trained at, and the run would be long and come out as scattered fragments: "
            f"{' and '.join(fixes) if fixes else 'give it at a trained size'}"
        )

    def check_planner(self, planner, where: str = "MetaCanvas weights") -> None:
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
    dit_lora: dict[str, torch.Tensor] | None = None,
) -> list[Path]:
    """Write `connector` for `backbone`, a BackboneAdapter, and the DiT part trained with it beside it: a fine-tuned
    DiT's full `dit_state` as the transformer folder `<name>_dit/` (in the layout of the backbone's transformer), or
    a LoRA's `dit_lora` tensors (peft keys of the DiT's modules, e.g. ``blocks.0.attn1.to_q.lora_A.weight``) as
    `<name>_dit_lora.safetensors`. Returns the files and folders written.

    `trained_sizes`: the output sizes the weights were trained at, each [width, height] (video: [width, height,
    frames]); sampling far from all of them warns (the plan and the DiT only saw those token grids)."""
    path = Path(path)
    if dit_state and dit_lora:
        raise MetaCanvasError("save_connector: give the DiT as a full state or as a LoRA, not both")
    tensors = {k: v.detach().contiguous().cpu() for k, v in connector.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    written, dit = [path], {"kind": "none"}
    if dit_state:
        folder = path.parent / DIT_FOLDER.format(path.stem)
        folder.mkdir(exist_ok=True)
        backbone.transformer.save_config(folder)  # the backbone's own transformer config: what the state fills
        save_file({k: v.detach().contiguous().cpu() for k, v in dit_state.items()},
                  str(folder / "diffusion_pytorch_model.safetensors"))
        written.append(folder)
        dit = {"kind": "transformer", "path": folder.name}
    elif dit_lora:
        lora = path.parent / DIT_LORA.format(path.stem)
        save_file({DIT_PREFIX + k: v.detach().contiguous().cpu() for k, v in dit_lora.items()}, str(lora),
                  metadata={"format": "metacanvas-dit-lora", "for": path.name})
        written.append(lora)
        dit = {"kind": "lora", "path": lora.name}
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
    meta["dit"] = json.dumps(dit)
    save_file(tensors, str(path), metadata=meta)
    return written


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
    if is_pickle(path):
        raise MetaCanvasError(f"MetaCanvas weights {str(path)!r}: {pickle_refusal(path)}")
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
) -> MetaCanvasWeights:
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
        dit = _dit_part(path, _json(meta, "dit", dict, {"kind": "none"}), bool(dit_state))
    except _Invalid as e:
        raise _invalid(path, str(e)) from None
    connector.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return MetaCanvasWeights(connector, architecture, path.stem, dit_state, recipe, backbone_config, sizes, dit)


def _dit_part(path: Path, raw: dict, inline: bool) -> DitPart:
    kind = raw.get("kind")
    if kind not in DIT_KINDS[:3]:
        raise _Invalid(f"dit kind {kind!r} is not one of {', '.join(DIT_KINDS[:3])}")
    if inline:
        if kind != "none":
            raise _Invalid("it carries DiT tensors inside and names a DiT part beside it")
        return DitPart("inline")
    if kind == "none":
        return NO_DIT
    part = path.parent / str(raw.get("path", ""))
    if not raw.get("path") or not (part / "config.json" if kind == "transformer" else part).exists():
        what = "fine-tuned DiT folder" if kind == "transformer" else "DiT LoRA file"
        raise MetaCanvasError(f"{path.name!r}: its {what} {part.name!r} is missing beside it: the weights were trained "
                              f"with it; copy it along from where {path.name!r} came from")
    return DitPart(kind, part)


def convert_to_current(path: str | Path, backbone, out: str | Path | None = None) -> list[Path]:
    """Rewrite format 1 weights (the DiT's tensors inside) in the current format: the connector file and the DiT
    part beside it, a transformer folder in the layout of `backbone` (a BackboneAdapter of the checkpoint the weights
    were trained on; checked). Tensors keep their dtype. Returns what was written (`out` defaults to `path`)."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        dtype = f.get_tensor(next(iter(f.keys()))).dtype
    loaded = load_connector(path, dtype=dtype)
    if loaded.dit.kind != "inline":
        raise MetaCanvasError(f"{path.name!r} is already in format {FORMAT_VERSION} (its DiT part is "
                              f"{loaded.dit.kind!r}): nothing to convert")
    loaded.check_backbone(backbone, where="convert-weights: weights")
    target = Path(out) if out is not None else path
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in loaded.dit_state.items()}
    return save_connector(target, loaded.connector, backbone, dit_state=state, recipe=loaded.recipe,
                          trained_sizes=loaded.trained_sizes or None)

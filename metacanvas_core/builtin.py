"""The tiny shapes-world models shipped inside the package: what runs with no download."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets" / "tiny"
PLANNER = ASSETS / "planner"
SANA_T2I = ASSETS / "sana_t2i"

# name -> (backbone folder, MetaCanvas weights): the methods of the text-to-image benchmark.
T2I_METHODS: dict[str, tuple[Path, Path]] = {
    "metacanvas": (SANA_T2I, ASSETS / "metacanvas_t2i.safetensors"),
    "global": (SANA_T2I, ASSETS / "global_t2i.safetensors"),
    "global-posemb": (ASSETS / "sana_t2i_posemb", ASSETS / "global_posemb_t2i.safetensors"),
}
# name -> (FLUX.1-Kontext folder, MetaCanvas edit weights): the methods of the editing benchmark
# (scripts/train_edit.sh makes them).
FLUX_EDIT = ASSETS / "flux_edit"
EDIT_METHODS: dict[str, tuple[Path, Path]] = {
    "metacanvas": (FLUX_EDIT, ASSETS / "metacanvas_edit.safetensors"),
    "global": (FLUX_EDIT, ASSETS / "global_edit.safetensors"),
}
# The video methods (text- and image-to-video share weights): name -> weights file stem, all on the tiny Wan folder.
WAN_T2V = "wan_t2v"
VIDEO_WEIGHTS: dict[str, str] = {
    "metacanvas": "metacanvas_t2v",  # 3 keyframes
    "metacanvas-k1": "metacanvas_t2v_k1",  # one 2-D canvas broadcast over time (the keyframe ablation)
    "global": "global_t2v",
}
# Video editing and in-context video share one set of weights per method (scripts/train_video_context.sh), on one
# widened Wan folder (its DiT takes latent x 2 + mask channels; each weights file carries its own trained DiT).
WAN_VIDEO_CONTEXT = "wan_video_context"
CONTEXT_WEIGHTS: dict[str, str] = {"metacanvas": "metacanvas_video_context", "global": "global_video_context"}
CONTEXT_TASKS: tuple[str, ...] = ("video-edit", "in-context")
VIDEO_TASKS: tuple[str, ...] = ("t2v", "i2v")
TASKS: tuple[str, ...] = ("t2i", *VIDEO_TASKS)
BUILTIN_NAME = "built-in tiny"


def builtin_edit(method: str) -> tuple[Path, Path] | None:
    """The built-in edit backbone folder and weights of `method`, or None while they do not ship."""
    backbone, weights = EDIT_METHODS[method]
    return (backbone, weights) if (backbone / "model_index.json").is_file() and weights.is_file() else None


def video_methods(folder: str = WAN_T2V, weights: dict[str, str] = VIDEO_WEIGHTS) -> dict[str, tuple[Path, Path]]:
    """name -> (Wan folder, weights) for the shipped video weights that are present (none until they ship); the
    text/image-to-video ones by default, `folder` and `weights` name others (video editing / in-context).

    Read from `ASSETS` at call time, so a test can point it at a folder of its own."""
    wan = ASSETS / folder
    if not (wan / "model_index.json").is_file():
        return {}
    found = {name: (wan, ASSETS / f"{stem}.safetensors") for name, stem in weights.items()}
    return {name: paths for name, paths in found.items() if paths[1].is_file()}


def builtin_methods(task: str) -> dict[str, tuple[Path, Path]]:
    """The built-in (backbone folder, weights) per method name for `task` (t2i, t2v, i2v, video-edit, in-context)."""
    if task == "t2i":
        return T2I_METHODS
    return video_methods(WAN_VIDEO_CONTEXT, CONTEXT_WEIGHTS) if task in CONTEXT_TASKS else video_methods()


def _default_first(paths, default: Path) -> list[Path]:
    """Sorted by name, the text-to-image default first: a ComfyUI combo's first entry is what a new node shows."""
    return sorted(paths, key=lambda p: (p.name != default.name, p.name))


def builtin_backbones() -> dict[str, Path]:
    """Display name -> folder for every shipped diffusers pipeline folder."""
    folders = [p for p in ASSETS.iterdir() if (p / "model_index.json").is_file()]
    return {f"{BUILTIN_NAME}: {p.name}": p for p in _default_first(folders, T2I_METHODS["metacanvas"][0])}


def builtin_connectors() -> dict[str, Path]:
    """Display name -> file for every shipped MetaCanvas weights file."""
    files = ASSETS.glob("*.safetensors")
    return {f"{BUILTIN_NAME}: {p.stem}": p for p in _default_first(files, T2I_METHODS["metacanvas"][1])}

"""The tiny shapes-world models shipped inside the package: what runs with no download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import MetaCanvasError

ASSETS = Path(__file__).resolve().parent / "assets" / "tiny"
PLANNER = ASSETS / "planner"
SANA_T2I = ASSETS / "sana_t2i"
BUILTIN_NAME = "built-in tiny"


@dataclass(frozen=True)
class BuiltinModels:
    """One task's built-in backbone folder and MetaCanvas weights per method (e.g. metacanvas, global), by name under
    `ASSETS`, read at call time (so a test can point it at a folder of its own)."""

    kind: str  # what they are called in messages: "the built-in {kind} weights"
    files: dict[str, tuple[str, str]]  # method -> (backbone folder, weights file stem)
    script: str  # what makes them, for the message while they are missing
    ablations: tuple[str, ...] = ()  # methods `bench` times beside the chosen one (same backbone, same rounds)

    @classmethod
    def on(cls, folder: str, weights: dict[str, str], kind: str, script: str, ablations: tuple[str, ...] = ()):
        """Every method's weights on one backbone folder."""
        return cls(kind, {m: (folder, stem) for m, stem in weights.items()}, script, ablations)

    def shipped(self) -> dict[str, tuple[Path, Path]]:
        """method -> (backbone folder, weights file) for the methods whose files are present."""
        found = {m: (ASSETS / folder, ASSETS / f"{stem}.safetensors") for m, (folder, stem) in self.files.items()}
        return {m: p for m, p in found.items() if (p[0] / "model_index.json").is_file() and p[1].is_file()}

    def get(self, method: str, task: str, backbone: str) -> tuple[Path, Path]:
        """The backbone folder and weights of `method` for --task `task`, or an error that says how to get them
        (`backbone`: what --backbone must be instead)."""
        if method not in self.files:
            raise MetaCanvasError(f"--task {task}: --method {method} has no built-in weights; choose one of "
                                  f"{', '.join(sorted(self.files))}, or give --backbone and --weights")
        found = self.shipped().get(method)
        if found is None:
            folder, stem = self.files[method]
            raise MetaCanvasError(
                f"--task {task}: the built-in {self.kind} weights are missing (metacanvas_core/assets/tiny/{folder}/ "
                f"and {stem}.safetensors): give --backbone ({backbone}) and --weights (MetaCanvas weights trained for "
                f"it), or "
                f"make them with {self.script}"
            )
        return found


# The text-to-image benchmark's methods (scripts/train_t2i.sh), each on its own SANA folder.
T2I_MODELS = BuiltinModels("text-to-image", {
    "metacanvas": (SANA_T2I.name, "metacanvas_t2i"),
    "global": (SANA_T2I.name, "global_t2i"),
    "global-posemb": ("sana_t2i_posemb", "global_posemb_t2i"),
}, "scripts/train_t2i.sh")
EDIT_MODELS = BuiltinModels.on("flux_edit", {"metacanvas": "metacanvas_edit", "global": "global_edit"}, "edit",
                               "scripts/train_edit.sh")
# Text- and image-to-video share weights, all on the tiny Wan folder.
WAN_T2V = "wan_t2v"
VIDEO_WEIGHTS: dict[str, str] = {
    "metacanvas": "metacanvas_t2v",  # 3 keyframes
    "metacanvas-k1": "metacanvas_t2v_k1",  # one 2-D canvas broadcast over time (the keyframe ablation)
    "global": "global_t2v",
}
VIDEO_MODELS = BuiltinModels.on(WAN_T2V, VIDEO_WEIGHTS, "video", "scripts/train_video.sh", ("metacanvas-k1",))
# The clip VAE scripts/train_video.sh's first step makes (48 channels), shipped on its own while the video DiTs trained
# on it are not yet; the script starts from it. No pipeline samples with it.
WAN_VAE = "wan_vae"
# Video editing and in-context video share one set of weights per method (scripts/train_video_context.sh), on one
# widened Wan folder (its DiT takes latent x 2 + mask channels; each weights file carries its own trained DiT).
WAN_VIDEO_CONTEXT = "wan_video_context"
CONTEXT_WEIGHTS: dict[str, str] = {"metacanvas": "metacanvas_video_context", "global": "global_video_context"}
CONTEXT_MODELS = BuiltinModels.on(WAN_VIDEO_CONTEXT, CONTEXT_WEIGHTS, "video-context",
                                  "scripts/train_video_context.sh")


def _default_first(paths, default: Path) -> list[Path]:
    """Sorted by name, the text-to-image default first: a ComfyUI combo's first entry is what a new node shows."""
    return sorted(paths, key=lambda p: (p.name != default.name, p.name))


def builtin_backbones() -> dict[str, Path]:
    """Display name -> folder for every shipped diffusers pipeline folder."""
    folders = [p for p in ASSETS.iterdir() if (p / "model_index.json").is_file()]
    return {f"{BUILTIN_NAME}: {p.name}": p for p in _default_first(folders, SANA_T2I)}


def builtin_connectors() -> dict[str, Path]:
    """Display name -> file for every shipped MetaCanvas weights file."""
    files = ASSETS.glob("*.safetensors")
    return {f"{BUILTIN_NAME}: {p.stem}": p for p in _default_first(files, ASSETS / "metacanvas_t2i.safetensors")}

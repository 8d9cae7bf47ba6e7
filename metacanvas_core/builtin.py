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
# name -> (FLUX.1-Kontext folder, MetaCanvas edit weights): the methods of the editing benchmark, once they ship
# (scripts/train_edit.sh makes them).
FLUX_EDIT = ASSETS / "flux_edit"
EDIT_METHODS: dict[str, tuple[Path, Path]] = {
    "metacanvas": (FLUX_EDIT, ASSETS / "metacanvas_edit.safetensors"),
    "global": (FLUX_EDIT, ASSETS / "global_edit.safetensors"),
}
BUILTIN_NAME = "built-in tiny"


def builtin_edit(method: str) -> tuple[Path, Path] | None:
    """The built-in edit backbone folder and weights of `method`, or None while they do not ship."""
    backbone, weights = EDIT_METHODS[method]
    return (backbone, weights) if (backbone / "model_index.json").is_file() and weights.is_file() else None


def builtin_connectors() -> dict[str, Path]:
    """Display name -> file for every shipped MetaCanvas weights file."""
    return {f"{BUILTIN_NAME}: {p.stem}": p for p in sorted(ASSETS.glob("*.safetensors"))}

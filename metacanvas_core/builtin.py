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
BUILTIN_NAME = "built-in tiny"


def builtin_connectors() -> dict[str, Path]:
    """Display name -> file for every shipped MetaCanvas weights file."""
    return {f"{BUILTIN_NAME}: {p.stem}": p for p in sorted(ASSETS.glob("*.safetensors"))}

"""Opt-in access to a real ComfyUI for the native-route tests.

Set METACANVAS_COMFYUI to a ComfyUI checkout (e.g. written by ../shared/comfyui-harness/checkout-comfyui.sh) and run
pytest from a Python that has ComfyUI's requirements (torchsde, ...). Without it, the tests that need ComfyUI skip
and say why; the project's own tests never need it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ENV = "METACANVAS_COMFYUI"
STUBS = Path(__file__).resolve().parents[2] / "shared" / "comfyui-harness" / "stubs"


def comfyui_or_skip():
    """ComfyUI's `comfy` package, imported from $METACANVAS_COMFYUI, or a skip with the reason."""
    root = os.environ.get(ENV)
    if not root:
        pytest.skip(f"needs a ComfyUI checkout: set {ENV}=/path/to/ComfyUI (see ../shared/comfyui-harness)")
    if not (Path(root) / "comfy" / "model_patcher.py").is_file():
        pytest.skip(f"{ENV}={root} is not a ComfyUI checkout (no comfy/model_patcher.py)")
    # Appended: ComfyUI's own top-level `nodes` module must not shadow the pack's `nodes` package in these tests
    # (inside ComfyUI the pack is imported as a package and only ever imports its nodes relatively).
    for p in (root, str(STUBS)):
        if p not in sys.path and Path(p).is_dir():
            sys.path.append(p)
    try:
        import torch
        from comfy.cli_args import args  # ComfyUI's defaults (it parses no command line when imported)

        if not torch.cuda.is_available():
            args.cpu = True  # as start-comfyui.sh runs it: --cpu
        import comfy.model_management  # noqa: F401
        import comfy.model_patcher  # noqa: F401
        import comfy.sample  # noqa: F401
        import comfy.samplers  # noqa: F401
    except ImportError as e:
        pytest.skip(f"ComfyUI at {root} does not import in this Python ({e}): install its requirements.txt here")
    import comfy

    return comfy

"""ComfyUI entry point of the MetaCanvas node pack (an independent implementation of arXiv 2512.11464).

ComfyUI imports this folder as a package from custom_nodes/. Importing it loads no model and runs no torch work.
"""

import importlib.util
import os
import sys

# Dropped into custom_nodes/ without `pip install .` (ComfyUI-Manager only installs requirements.txt): make the
# bundled library importable. Appended, never prepended, so nothing here shadows ComfyUI's own top-level modules
# (ComfyUI has a module called `nodes`; this pack's `nodes/` is only ever imported relatively).
if importlib.util.find_spec("metacanvas_core") is None:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

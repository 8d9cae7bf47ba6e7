"""The one set of input limits. Node widgets (INPUT_TYPES), command-line flags and the library's entry points all
read these, so a value the editor refuses is refused by the CLI and by Python callers too, in the same words.

Not-a-number and infinity are refused by name: they pass every `<`/`>` check (ComfyUI's own range check too) and
would otherwise sample every step and end as a black image or a misleading dtype error.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import MetaCanvasError


@dataclass(frozen=True)
class Limit:
    name: str  # the input's name in the nodes (and, with dashes, the CLI flag)
    kind: type  # int or float
    min: int | float
    max: int | float
    default: int | float
    hint: str = ""  # what the value means, appended to the message

    def check(self, value) -> int | float:
        """`value` as `kind` if it is a finite number within [min, max], else a MetaCanvasError naming the input."""
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isfinite(value) and (self.kind is float or float(value).is_integer()):
                if self.min <= value <= self.max:
                    return self.kind(value)
        raise MetaCanvasError(f"{self.name} must be {self.what()}{self.hint}, got {value!r}")

    def parse(self, text: str) -> int | float:
        """A command-line string checked like `check` (e.g. '1e3' is not a whole number, 'nan' is refused)."""
        try:
            value = int(text) if self.kind is int else float(text)
        except ValueError:
            raise MetaCanvasError(f"{self.name} must be {self.what()}{self.hint}, got {text!r}") from None
        return self.check(value)

    def what(self) -> str:
        if self.kind is int:
            return f"a whole number from {self.min} to {self.max}"
        return f"a finite number from {self.min:g} to {self.max:g}"

    def widget(self, **options) -> dict:
        """INPUT_TYPES options of a node's INT/FLOAT widget for this input."""
        return {"default": self.default, "min": self.min, "max": self.max, **options}


STEPS = Limit("steps", int, 1, 1000, 20)
CFG = Limit("cfg", float, 0.0, 30.0, 3.0, " (1 turns guidance off)")
STRENGTH = Limit("strength", float, 0.0, 2.0, 1.0, " (0 turns the canvas off, 1 is as trained)")
SHIFT = Limit("shift", float, 0.01, 100.0, 3.0, " (1 = none, 3 = released SANA's)")
SEED = Limit("seed", int, 0, 2**64 - 1, 0)
WIDTH = Limit("width", int, 4, 8192, 32)
HEIGHT = Limit("height", int, 4, 8192, 32)
BATCH = Limit("batch_size", int, 1, 64, 1)
FRAMES = Limit("frames", int, 1, 1025, 17, " (video backbones take 4k+1: 5, 9, 13, 17, ...)")
# Command-line only: the PNG's view enlargement, benchmark prompts (bench checks its --repeats itself).
UPSCALE = Limit("upscale", int, 1, 64, 8)
PROMPTS = Limit("n", int, 1, 100_000, 200)
FPS = Limit("fps", int, 1, 120, 8)

BY_NAME = {limit.name: limit for limit in (STEPS, CFG, STRENGTH, SHIFT, SEED, WIDTH, HEIGHT, BATCH, FRAMES)}


def checked(**values) -> None:
    """Check named inputs at once, e.g. `checked(steps=steps, cfg=cfg)`: before anything is loaded or allocated."""
    for name, value in values.items():
        BY_NAME[name].check(value)

"""Command line: python -m metacanvas_core {generate, evaluate, bench, probe, table, convert-weights, convert-comfy,
train, export-dataset, cost} ... (--help on each). Each subcommand registers itself from its own module; this runs
the one asked for."""

from __future__ import annotations

import argparse
import sys
import warnings

from .cli import bench, convert_comfy, convert_weights, evaluate, generate, probe, table
from .errors import MetaCanvasError, MetaCanvasWarning
from .training.cli import register as register_training

COMMANDS = (generate, evaluate, bench, probe, table, convert_weights, convert_comfy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metacanvas_core", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    register_training(sub)
    args = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", MetaCanvasWarning)  # every run's notice, not only the first of a session
        warnings.showwarning = _show_warning
        try:
            args.func(args)
        except MetaCanvasError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # an output path that cannot be written, a full disk
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MetaCanvasWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    sys.exit(main())

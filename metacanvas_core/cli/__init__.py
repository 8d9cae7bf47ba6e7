"""The subcommands of `python -m metacanvas_core`, one module each; `register(sub)` adds one to the parser."""

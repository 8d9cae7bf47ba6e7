"""The one exception type users see: a ValueError whose message names the argument and the fix."""


class MetaCanvasError(ValueError):
    """Bad input or a mismatched model. The message says what was wrong and what to do instead."""

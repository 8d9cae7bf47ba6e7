"""The one exception type users see (a ValueError whose message names the argument and the fix), and the one
warning category (something works, but not as well as it could: say why and what to change)."""


class MetaCanvasError(ValueError):
    """Bad input or a mismatched model. The message says what was wrong and what to do instead."""


class MetaCanvasWarning(UserWarning):
    """A run goes ahead but will likely disappoint, e.g. a size far from what the weights were trained at. The CLI
    prints these as 'warning: ...'; the nodes show them on the node and in the console."""

"""`convert-weights`: rewrite MetaCanvas weights of format 1 (the whole DiT inside the file) in the current format
(the connector file, and the DiT part beside it as a transformer folder loaded like any backbone)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MetaCanvasError


def run(args) -> None:
    from ..backbones import load_backbone
    from ..checkpoints import convert_to_current, load_connector

    backbone = args.backbone
    if backbone is None:
        base = load_connector(args.weights).recipe.get("base")
        if not base or not Path(base).is_dir():
            raise MetaCanvasError(f"convert-weights: give --backbone FOLDER, the checkpoint {args.weights.name} was "
                                  f"trained on (its recipe names {base!r}, which is not a folder here)")
        backbone = Path(base)
    written = convert_to_current(args.weights, load_backbone(backbone), args.out)
    print(f"wrote {', '.join(map(str, written))}")


def register(sub) -> None:
    c = sub.add_parser("convert-weights", help="rewrite format 1 MetaCanvas weights (the DiT inside the file) as "
                                               "the connector file + the DiT folder beside it",
                       description="The connector's tensors, recipe and trained sizes are kept; the DiT's tensors "
                                   "move, in their own dtype, to <name>_dit/ in the layout of --backbone's "
                                   "transformer. Sampling gives the same outputs.")
    c.add_argument("weights", type=Path, help="the weights file (.safetensors) to convert")
    c.add_argument("--backbone", type=Path, help="the backbone folder the weights were trained on (default: the "
                                                 "recipe's --base, if that folder exists here)")
    c.add_argument("--out", type=Path, help="where to write the converted file (default: in place; the DiT folder "
                                            "goes beside it)")
    c.set_defaults(func=run)

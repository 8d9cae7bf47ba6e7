"""`convert-comfy`: the DiT part of MetaCanvas weights as a file ComfyUI loads natively (see comfy_export)."""

from __future__ import annotations

from pathlib import Path

from ..comfy_export import FORMATS


def run(args) -> None:
    from ..checkpoints import load_connector  # noqa: PLC0415 (CLI start-up)
    from ..comfy_export import convert  # noqa: PLC0415

    weights = load_connector(args.weights)
    base = args.base / "transformer" if (args.base / "transformer" / "config.json").is_file() else args.base
    done = convert(weights, base, args.out, args.format)
    print(f"wrote {done['out']}: {done['tensors']} tensors, {done['format']} from the {done['dit_part']} DiT part of "
          f"{weights.name!r} (connector file unchanged: {args.weights})")
    skipped = done.get("not_in_lora") or {}
    if skipped:
        worst = max(skipped.values())
        print(f"warning: {len(skipped)} changed tensors are not in the LoRA because ComfyUI's LoRA loading never "
              f"patches them (parameters beside sub-modules, e.g. {sorted(skipped)[0]}; largest change {worst:.3g}): "
              "the LoRA gives the fine-tuned DiT only approximately; --format diffusion_models writes it exactly")


def register(sub) -> None:
    p = sub.add_parser(
        "convert-comfy",
        help="write the DiT part of MetaCanvas weights for ComfyUI: a LoRA in ComfyUI's keys (LoraLoaderModelOnly) or "
             "the whole DiT as a diffusion_models file (UNETLoader)")
    p.add_argument("weights", type=Path, help="MetaCanvas weights (.safetensors, with its DiT part beside it)")
    p.add_argument("--base", type=Path, required=True,
                   help="the base backbone these weights were trained on: a diffusers folder or its transformer/")
    p.add_argument("--out", type=Path, required=True, help="the file to write (.safetensors)")
    p.add_argument("--format", choices=FORMATS, default="lora",
                   help="lora: a peft LoRA part as a LoRA (block-diagonal where ComfyUI fuses weights, e.g. FLUX "
                        "q/k/v), a full fine-tune as its difference to --base (.diff keys); "
                        "diffusion_models: the whole fine-tuned DiT in ComfyUI's keys")
    p.set_defaults(func=run)

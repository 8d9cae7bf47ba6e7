"""Text-to-image: MetaCanvas on a text-to-image backbone (SANA) from the shapes world or a user's image folder.

The stages, dropouts, noise levels, loss and export are every task's (canvas_dit.py). What is text-to-image's own:
the examples (shapes-world scenes drawn afresh, or `--data`: an image folder with metadata.jsonl or tar shards,
whose latents `--cache-dir` keeps), the fresh tiny SANA DiT of stage global, and the text-only dropout's scope
(`--text-only-dropout-on position`: only captions that state positions, the only ones whose canvas can know where
objects go).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones.base import BackboneAdapter
from ...world import shapes
from ...world.tiny_models import DIT_HEADS, DIT_LAYERS, IMAGE_SIZE
from ..data import DataStream, Example, open_dataset
from ..world_pool import FrozenMemo, module_fingerprint
from .canvas_dit import CanvasDiTTask, Drawn, Source

TEXT_ONLY_DROPOUT_ON = ("all", "position")  # which captions the text-only dropout applies to


class ImagesAndCaptions(Source):
    task = "t2i"
    export_names = {"global": "global_base_t2i", "metacanvas": "metacanvas_t2i", "global-continue": "global_t2i"}
    kinds = ("image",)

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--pos-embed", action="store_true", help="stage global: sin-cos positional embedding")
        ap.add_argument("--dit-heads", type=int, default=DIT_HEADS, help="stage global: DiT width in heads of 32")
        ap.add_argument("--dit-layers", type=int, default=DIT_LAYERS, help="stage global: DiT depth")
        ap.add_argument("--data", type=Path, help="image folder with metadata.jsonl, a .tar shard or a folder of "
                                                  "shards (default: the shapes world, drawn on the fly)")
        ap.add_argument("--resolution", type=int, default=IMAGE_SIZE, help="training image size (square)")
        ap.add_argument("--cache-dir", type=Path,
                        help="keep --data's VAE latents and the planner's text states here (safetensors), computed "
                             "once per sample; one folder per backbone VAE, planner and resolution")
        ap.add_argument("--text-only-dropout-on", choices=TEXT_ONLY_DROPOUT_ON, default="all",
                        help="stage metacanvas: all captions (the shipped weights) or only those of category "
                             "'position' (metadata field `category`; captions without one count as not position)")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.stage != "global" and ((args.dit_heads, args.dit_layers) != (DIT_HEADS, DIT_LAYERS) or args.pos_embed):
            ap.error("--dit-heads/--dit-layers/--pos-embed only apply to --stage global; later stages keep the --base "
                     "DiT")
        if args.text_only_dropout_on != "all" and args.stage != "metacanvas":
            ap.error("--text-only-dropout-on only applies to --stage metacanvas (the baselines have no canvas)")

    def __init__(self, args: argparse.Namespace, device: torch.device, disk) -> None:
        super().__init__(args, device, disk)
        self.res = args.resolution
        self.stream = None if args.data is None else DataStream(open_dataset(args.data, self.res), args.seed,
                                                                args.strict)

    def fresh_backbone(self) -> BackboneAdapter:
        """The tiny world's SANA DiT from scratch, with the trained tiny VAE."""
        from diffusers import AutoencoderDC

        from ...backbones.sana import SanaBackbone
        from ...world.tiny_models import new_dit, new_scheduler

        a = self.args
        dit = new_dit(1.0 if a.pos_embed else None, a.dit_heads, a.dit_layers)
        return SanaBackbone(dit, AutoencoderDC.from_pretrained(a.vae), new_scheduler(), "tiny-sana")

    def bind(self, bb: BackboneAdapter) -> None:
        self.bb, self.token_grid = bb, bb.token_grid(self.res, self.res)  # a size it cannot tile fails up front
        self.latents = FrozenMemo(f"latent|{module_fingerprint(bb.vae)}|{self.args.data}|{self.res}", self.disk)

    def canvas(self) -> dict:
        return {"canvas_grid": [1, *self.token_grid[1:]]}

    def example(self, rng: np.random.Generator, position: int) -> tuple[Drawn, list[str]]:
        if self.stream is None:
            scene = shapes.sample_scene(rng)
            ex, skipped = Example(shapes.model_pixels(shapes.render(scene.objects, self.res, rng)[None])[0],
                                  scene.caption, scene.category), []
        else:
            ex, skipped = self.stream[position]
        return Drawn(torch.from_numpy(ex.image), ex.caption, ex.key, ex.category), skipped

    def text_only_applies(self, ex: Drawn) -> bool:
        return self.args.text_only_dropout_on in ("all", ex.category)

    def noise_shape(self, kind: str) -> tuple[int, ...]:
        return self.bb.latent_shape(1, self.res, self.res)[1:]

    def inputs(self, drawn: list[Drawn], kinds: list[str]) -> dict:
        def encode(todo: list[int]) -> torch.Tensor:
            with torch.no_grad():
                return self.bb.encode(torch.stack([drawn[i].target for i in todo]).to(self.device)).float()

        z = self.latents.many([x.key for x in drawn], encode)
        return {"z": torch.stack(z).to(self.device)}

    def grid(self, kind: str) -> tuple[int, int, int]:
        return self.token_grid

    def recipe(self) -> dict:
        a = self.args
        return {"task": self.task, "pos_embed": a.pos_embed, "resolution": [self.res, self.res],
                "text_only_dropout_on": a.text_only_dropout_on if a.stage == "metacanvas" else None,
                "data": str(a.data) if a.data else "shapes world"}

    def trained_sizes(self) -> list[list[int]]:
        return [[self.res, self.res]]

    def save_folder(self, folder: Path, bb: BackboneAdapter) -> None:
        from ...world.tiny_models import save_sana_pipeline_folder

        save_sana_pipeline_folder(folder, bb.transformer.eval(), bb.vae.float(), bb.scheduler)


class TextToImage(CanvasDiTTask):
    name = "t2i"
    source = ImagesAndCaptions

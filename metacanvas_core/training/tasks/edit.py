"""Image editing on FLUX.1-Kontext: MetaCanvas as the paper trains it for editing (the shipped recipe at toy scale).

Data: edit-world triples (source scene, instruction, target scene), jittered, training combinations only, from a
fixed pool (world_pool: each edit's latents and planner states are computed once). The DiT denoises the *target*'s
latents with the *source*'s clean latents beside them as Kontext's reference tokens (`Conditioning(reference=...)`);
the planner reads the instruction after seeing the source image (so the plan is grounded in what is where), and its
text states (through the text connector) are the DiT's text; with a canvas, its canvas states (through the canvas
connector) are added to the generated tokens only. `--identity-share`: identity edits ("move the red circle to top
left" where it already is), the sanity task of reference copying.

Stages, dropouts, loss and export are every task's (canvas_dit.py); a dropped caption drops the planner's view of
the source too but keeps the reference latents (sampling gives them to both CFG branches). Exports record
`task: "edit"` in the weights' recipe: sampling refuses them without a source image. The Kontext VAE is trained by
the `vae-kontext` task below.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones.base import BackboneAdapter, Conditioning
from ...editing import EDIT_TASK
from ...errors import MetaCanvasError
from ...world.edits import identity_edit, render_pair, sample_edit
from ...world.shapes import model_pixels
from ...world.tiny_flux import (
    EDIT_IMAGE_SIZE, FLUX_DOUBLE_LAYERS, FLUX_SINGLE_LAYERS, new_flux_dit, new_flux_scheduler, new_flux_vae,
    save_flux_kontext_folder,
)
from ..data import DataStream
from ..datasets import Sizes, TaskDataset
from ..world_pool import FrozenMemo, add_pool_arguments, example_rng, module_fingerprint
from .base import Sample
from .canvas_dit import CanvasDiTTask, Drawn, Source
from .vae import VaePretraining


class EditTriples(Source):
    task = EDIT_TASK
    export_names = {"global": "global_base_edit", "metacanvas": "metacanvas_edit", "global-continue": "global_edit"}
    kinds = ("edit",)
    text_sees_visuals = True

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--double-layers", type=int, default=FLUX_DOUBLE_LAYERS, help="stage global: DiT depth "
                                                                                      "(double-stream blocks)")
        ap.add_argument("--single-layers", type=int, default=FLUX_SINGLE_LAYERS,
                        help="stage global: DiT depth (single-stream blocks)")
        ap.add_argument("--resolution", type=int, default=EDIT_IMAGE_SIZE, help="training image size (square)")
        ap.add_argument("--data", type=Path,
                        help="edit triples: a folder with metadata.jsonl ({\"source\": image, \"target\": image, "
                             "\"instruction\": ...}) or tar shards (<key>.source.png, <key>.target.png, <key>.json); "
                             "default: the edit world")
        ap.add_argument("--identity-share", type=float, default=0.0,
                        help="share of samples that are identity edits (\"move the red circle to top left\" where it "
                             "already is: the target is the source), the sanity task of reference copying")
        add_pool_arguments(ap, "edits")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.stage != "global" and (args.double_layers, args.single_layers) != (FLUX_DOUBLE_LAYERS,
                                                                                 FLUX_SINGLE_LAYERS):
            ap.error("--double-layers/--single-layers only apply to --stage global; later stages keep the --base DiT")
        if not 0.0 <= args.identity_share <= 1.0 or args.pool < 0:
            ap.error("--identity-share must lie in [0, 1] and --pool be 0 (fresh draws) or a number of edits")
        if args.data is not None and args.identity_share:
            ap.error("--identity-share builds identity edits of the edit world's scenes; with --data, add identity "
                     "triples (target = source) to the data instead")
        if args.data is None and args.resolution != EDIT_IMAGE_SIZE:
            ap.error(f"the edit world is {EDIT_IMAGE_SIZE}x{EDIT_IMAGE_SIZE}: give --data for another --resolution")

    def __init__(self, args: argparse.Namespace, device: torch.device, disk) -> None:
        super().__init__(args, device, disk)
        self.res = args.resolution
        self.stream = None if args.data is None else DataStream(TaskDataset(args.data, EDIT_TASK, Sizes(self.res)),
                                                                args.seed, args.strict)

    def fresh_backbone(self) -> BackboneAdapter:
        from diffusers import AutoencoderKL

        from ...backbones.flux import FluxKontextBackbone

        a = self.args
        return FluxKontextBackbone(new_flux_dit(a.double_layers, a.single_layers), AutoencoderKL.from_pretrained(a.vae),
                                   new_flux_scheduler(), "tiny-kontext")

    def from_base(self, bb: BackboneAdapter) -> BackboneAdapter:
        if "reference" not in bb.conditioning_parts:
            raise MetaCanvasError(f"--base {self.args.base} is a {bb.architecture} backbone; editing trains on "
                                  "FLUX.1-Kontext (it takes the source image as reference)")
        return bb

    def bind(self, bb: BackboneAdapter) -> None:
        self.bb, self.token_grid = bb, bb.token_grid(self.res, self.res)  # a size it cannot tile fails up front
        data = f"|{self.args.data}" if self.stream else ""
        self.latents = FrozenMemo(f"kontext-latents|{module_fingerprint(bb.vae)}|{self.res}{data}", self.disk)

    def canvas(self) -> dict:
        return {"canvas_grid": [1, *self.token_grid[1:]]}

    def example(self, rng: np.random.Generator, position: int) -> tuple[Drawn, list[str]]:
        a = self.args
        if self.stream is not None:
            rec, skipped = self.stream[position]
            k, world = rec.key, "data"
            source, target, instruction = rec.media["source"], rec.media["target"], rec.text
        else:
            skipped, world = [], "edit-world"
            k = int(rng.integers(a.pool)) if a.pool else None
            ex = rng if k is None else example_rng(world, k)
            edit = sample_edit(ex, split="train")
            source, target = render_pair(edit, self.res, ex)
            instruction = edit.instruction
        identity = bool(rng.random() < a.identity_share)
        if identity:
            edit, target = identity_edit(edit, rng), source
            instruction = edit.instruction
        # The latents of source and target are cached by pool edit (an identity edit's target is its source).
        keys = {"source": None, "target": None} if k is None else \
            {"source": f"source:{k}", "target": f"source:{k}" if identity else f"target:{k}"}
        return Drawn(target, instruction, None if k is None else f"{world}:{k}:{int(identity)}",
                     extra={"source": source, "keys": keys}), skipped

    def noise_shape(self, kind: str) -> tuple[int, ...]:
        return self.bb.latent_shape(1, self.res, self.res)[1:]

    def visuals(self, ex: Drawn, kind: str) -> list:
        return [ex.extra["source"]]

    def validation_input(self, ex: Drawn) -> tuple[str, torch.Tensor]:
        return EDIT_TASK, torch.from_numpy(np.asarray(ex.extra["source"])).float().div(255)[None]

    def _latents(self, drawn: list[Drawn], which: str) -> torch.Tensor:
        images = [x.target if which == "target" else x.extra["source"] for x in drawn]

        def encode(todo: list[int]) -> torch.Tensor:
            pixels = torch.from_numpy(model_pixels(np.stack([images[i] for i in todo]))).to(self.device)
            with torch.no_grad():
                return self.bb.encode(pixels).float()

        return torch.stack(self.latents.many([x.extra["keys"][which] for x in drawn], encode)).to(self.device)

    def inputs(self, drawn: list[Drawn], kinds: list[str]) -> dict:
        return {"z": self._latents(drawn, "target"), "reference": self._latents(drawn, "source")}

    def conditioning(self, batch: dict, idx: list[int], kind: str) -> Conditioning:
        return Conditioning(reference=batch["reference"][idx])

    def grid(self, kind: str) -> tuple[int, int, int]:
        return self.token_grid

    def recipe(self) -> dict:
        a = self.args
        return {"task": self.task, "resolution": [self.res, self.res], "data": str(a.data) if a.data else "edit world",
                "identity_share": a.identity_share, "pool": a.pool}

    def trained_sizes(self) -> list[list[int]]:
        return [[self.res, self.res]]

    def save_folder(self, folder: Path, bb: BackboneAdapter) -> None:
        save_flux_kontext_folder(folder, bb.transformer.eval(), bb.vae.float(), bb.scheduler)


class ImageEditing(CanvasDiTTask):
    name = EDIT_TASK
    source = EditTriples


class KontextVaePretraining(VaePretraining):
    """Tiny world: the tiny Kontext `AutoencoderKL` (16 channels) on edit-world sources and targets. As the real
    one's config does, its `shift_factor` and `scaling_factor` are then measured (mean and 1 / std of the latents
    the adapter encodes, the posterior's mode) so the DiT sees zero-mean, unit-variance latents."""

    name = "vae-kontext"
    KL_WEIGHT = 1e-6  # a light KL term, as latent-diffusion VAEs have, keeps the posterior's scale in check

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.vae, self.device = new_flux_vae().to(device), device

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        source, target = render_pair(sample_edit(rng), EDIT_IMAGE_SIZE, rng)
        return Sample({"image": model_pixels((source if rng.random() < 0.5 else target)[None])[0]})

    def loss(self, batch: dict) -> torch.Tensor:
        x = batch["x"]
        posterior = self.vae.encode(x).latent_dist
        rec = self.vae.decode(posterior.sample()).sample.float()
        return (rec - x).abs().mean() + (rec - x).pow(2).mean() + self.KL_WEIGHT * posterior.kl().mean()

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        vae = new_flux_vae()
        vae.load_state_dict(state["vae"])
        rng = np.random.default_rng(99)
        pairs = [render_pair(sample_edit(rng), EDIT_IMAGE_SIZE, rng) for _ in range(128)]
        x = torch.from_numpy(model_pixels(np.stack([im for p in pairs for im in p])))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        vae.register_to_config(shift_factor=round(z.mean().item(), 5), scaling_factor=round(1.0 / z.std().item(), 5))
        vae.save_pretrained(out / "vae")
        return [out / "vae"]

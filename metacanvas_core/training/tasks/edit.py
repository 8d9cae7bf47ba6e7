"""Image editing on FLUX.1-Kontext: MetaCanvas as the paper trains it for editing (the shipped recipe at toy scale).

Data: edit-world triples (source scene, instruction, target scene), jittered, training combinations only. The DiT
denoises the *target*'s latents with the *source*'s clean latents beside them as Kontext's reference tokens
(`Conditioning(reference=...)`); the planner reads the instruction after seeing the source image (so the plan is
grounded in what is where), and its text states (through the text connector) are the DiT's text; with a canvas,
its canvas states (through the canvas connector) are added to the generated tokens only.

Stages, as for text-to-image (tasks/t2i.py): `global` trains a fresh tiny Kontext DiT with global conditioning only
(the tiny world's "pretrained Kontext" and global baseline), on the Kontext VAE trained by the `vae-kontext` task;
`metacanvas` adds canvas tokens and the zero-initialised canvas connector; `global-continue` trains the baseline on
with the same extra budget, data and seed. Dropout mirrors what sampling does for CFG: 10% of the samples lose the
instruction and the planner's view of the source (Plan Canvas's attached unconditional plan is the empty prompt
without images) but keep the reference latents (sampling gives them to both CFG branches); with a canvas, another
share drops the DiT's text only, keeping the canvas.

Exports record `task: "edit"` in the weights' recipe: sampling refuses them without a source image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones import load_backbone
from ...backbones.base import Conditioning
from ...checkpoints import save_connector
from ...connectors import ConnectorConfig, MetaCanvasConnector
from ...editing import EDIT_TASK
from ...errors import MetaCanvasError
from ...injection import canvas_injected
from ...planner import Planner
from ...world.edits import identity_edit, render_pair, sample_edit
from ...world.shapes import model_pixels
from ...world.tiny_flux import (
    EDIT_IMAGE_SIZE, FLUX_DOUBLE_LAYERS, FLUX_SINGLE_LAYERS, new_flux_dit, new_flux_scheduler, new_flux_vae,
    save_flux_kontext_folder,
)
from ..data import DiskCache
from ..dit_lora import merge_dit_lora
from ..world_pool import FrozenMemo, add_pool_arguments, example_rng, module_fingerprint
from .base import Sample, torch_generator
from .t2i import CAPTION_DROPOUT, STAGES, TEXT_ONLY_DROPOUT, TextToImage, add_recipe_arguments, planner_lora, \
    sample_timestep
from .vae import VaePretraining

EXPORT_NAMES = {"global": "global_base_edit", "metacanvas": "metacanvas_edit", "global-continue": "global_edit"}


def padded(states: list[torch.Tensor], hidden: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample text states (L_i, hidden) as one zero-padded batch (states, mask)."""
    n = max(s.shape[0] for s in states)
    text = torch.zeros(len(states), n, hidden, device=device)
    mask = torch.zeros(len(states), n, dtype=torch.long, device=device)
    for i, s in enumerate(states):
        text[i, : s.shape[0]], mask[i, : s.shape[0]] = s.to(device), 1
    return text, mask


def seen_text_states(planner: Planner, prompts: list[str], visuals: list[list]) -> tuple[torch.Tensor, torch.Tensor]:
    """The planner's text states of each prompt after its visuals (the source image, clip or references), padded
    (states, mask). Each sample alone: a padded batch would change their last bits with the batch's other samples,
    so a resumed or split run would drift."""
    with torch.no_grad():
        states = [planner.encode([p], visuals=[v]).text_states[0].float() for p, v in zip(prompts, visuals)]
    return padded(states, planner.hidden_size, planner.device)


class ImageEditing(TextToImage):
    """Shares the text-to-image task's optimizer groups, trained modules and seeded text connector; draws edits."""

    name = EDIT_TASK

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--stage", choices=STAGES, required=True)
        ap.add_argument("--planner", type=Path, required=True, help="Qwen2.5-VL planner folder (stays frozen)")
        ap.add_argument("--base", type=Path, help="FLUX.1-Kontext folder to train from (stages metacanvas and "
                                                  "global-continue)")
        ap.add_argument("--base-connector", type=Path,
                        help="MetaCanvas weights whose text connector to start from (default: a fresh one)")
        ap.add_argument("--vae", type=Path, help="stage global (tiny world): the trained Kontext VAE folder")
        ap.add_argument("--double-layers", type=int, default=FLUX_DOUBLE_LAYERS, help="stage global: DiT depth "
                                                                                      "(double-stream blocks)")
        ap.add_argument("--single-layers", type=int, default=FLUX_SINGLE_LAYERS,
                        help="stage global: DiT depth (single-stream blocks)")
        ap.add_argument("--resolution", type=int, default=EDIT_IMAGE_SIZE, help="training image size (square)")
        ap.add_argument("--identity-share", type=float, default=0.0,
                        help="share of samples that are identity edits (\"move the red circle to top left\" where it "
                             "already is: the target is the source), the sanity task of reference copying")
        add_pool_arguments(ap, "edits")
        add_recipe_arguments(ap)

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.stage == "global":
            if args.vae is None or args.base is not None:
                ap.error("--stage global builds the tiny Kontext DiT from scratch: give --vae, not --base")
            if args.dit_lora_rank:
                ap.error("--dit-lora-rank needs a pretrained DiT (--base): stage global trains one from scratch")
        else:
            if args.base is None:
                ap.error(f"--stage {args.stage} trains from a FLUX.1-Kontext folder: give --base FOLDER")
            if (args.double_layers, args.single_layers) != (FLUX_DOUBLE_LAYERS, FLUX_SINGLE_LAYERS):
                ap.error("--double-layers/--single-layers only apply to --stage global; later stages keep the "
                         "--base DiT")
        if args.stage != "metacanvas" and (args.planner_lora_rank or args.text_only_dropout != TEXT_ONLY_DROPOUT):
            ap.error("--planner-lora-rank and --text-only-dropout only apply to --stage metacanvas")
        if not 0.0 <= args.text_only_dropout <= 1.0 - CAPTION_DROPOUT:
            ap.error(f"--text-only-dropout must lie in [0, {1.0 - CAPTION_DROPOUT}]")
        if not 0.0 <= args.identity_share <= 1.0 or args.pool < 0:
            ap.error("--identity-share must lie in [0, 1] and --pool be 0 (fresh draws) or a number of edits")

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.args, self.device, self.res = args, device, args.resolution
        self.planner = Planner.from_pretrained(args.planner, dtype=dtype, device=device)
        if args.stage == "global":
            from diffusers import AutoencoderKL

            from ...backbones.flux import FluxKontextBackbone

            bb = FluxKontextBackbone(new_flux_dit(args.double_layers, args.single_layers),
                                     AutoencoderKL.from_pretrained(args.vae), new_flux_scheduler(), "tiny-kontext")
        else:
            bb = load_backbone(args.base)
        if "reference" not in bb.conditioning_parts:
            raise MetaCanvasError(f"--base {args.base} is a {bb.architecture} backbone; editing trains on "
                                  "FLUX.1-Kontext (it takes the source image as reference)")
        grid = bb.token_grid(self.res, self.res)  # a size the backbone cannot tile is a clear error up front
        cfg = ConnectorConfig(self.planner.hidden_size, bb.dit_dim, bb.caption_channels,
                              canvas_grid=[1, *grid[1:]], use_canvas=args.stage == "metacanvas",
                              planner_lora=planner_lora(self.planner, args.planner_lora_rank))
        self._attach(bb, cfg, device, dtype)
        disk = DiskCache(args.cache_dir) if args.cache_dir else None
        self.latents = FrozenMemo(f"kontext-latents|{module_fingerprint(bb.vae)}|{self.res}", disk)
        self.seen = FrozenMemo(f"planner-seen|{module_fingerprint(self.planner.model)}|{self.res}", disk)

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        a = self.args
        k = int(rng.integers(a.pool)) if a.pool else None
        ex = rng if k is None else example_rng("edit-world", k)
        edit = sample_edit(ex, split="train")
        source, target = render_pair(edit, self.res, ex)
        identity = bool(rng.random() < a.identity_share)
        if identity:
            edit, target = identity_edit(edit, rng), source
        u = rng.random()  # one draw decides both dropouts, as in text-to-image
        dropped = u < CAPTION_DROPOUT
        extra = self.args.text_only_dropout if self.conn.use_canvas else 0.0
        t = sample_timestep(rng, self.args.timestep_sampling)
        gen = torch_generator(rng)
        text_prompt = "" if u < CAPTION_DROPOUT + extra else edit.instruction
        # Cache keys (pool index): the latents of source and target, the planner's states of the text it reads.
        keys = {"source": None if k is None else f"source:{k}", "target": None if k is None else
                f"source:{k}" if identity else f"target:{k}",
                "text": None if k is None or not text_prompt else f"seen:{k}:{text_prompt}"}
        return Sample({
            "source": source, "target": target, "keys": keys,
            "canvas_prompt": "" if dropped else edit.instruction,
            "text_prompt": text_prompt,
            "sees_source": not dropped,
            "t": t,
            "noise": torch.randn(self.latent_shape, generator=gen),
            "dropout_seed": int(torch.randint(2**62, (), generator=gen)),
        })

    def _visuals(self, d: list[dict], key: str) -> list[list[np.ndarray]]:
        """What the planner sees before each sample's prompt `key`: the source, unless that prompt was dropped."""
        return [[x["source"]] if x["sees_source"] and x[key] else [] for x in d]

    def _latents(self, d: list[dict], which: str) -> torch.Tensor:
        def encode(todo: list[int]) -> torch.Tensor:
            pixels = torch.from_numpy(model_pixels(np.stack([d[i][which] for i in todo]))).to(self.device)
            with torch.no_grad():
                return self.bb.encode(pixels).float()

        return torch.stack(self.latents.many([x["keys"][which] for x in d], encode)).to(self.device)

    def _text_states(self, d: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """The planner's states of each sample's text after its source (`seen_text_states`), from the memo where
        the same pool edit was read before; padded (states, mask)."""
        prompts, visuals = [x["text_prompt"] for x in d], self._visuals(d, "text_prompt")

        def encode(todo: list[int]) -> list[torch.Tensor]:
            states, mask = seen_text_states(self.planner, [prompts[i] for i in todo], [visuals[i] for i in todo])
            return [s[: int(m.sum())] for s, m in zip(states, mask)]

        return padded(self.seen.many([x["keys"]["text"] for x in d], encode), self.planner.hidden_size, self.device)

    def batch(self, samples: list[Sample]) -> dict:
        d = [s.data for s in samples]
        z, ref = self._latents(d, "target"), self._latents(d, "source")
        text, mask = self._text_states(d)
        return {"z": z, "reference": ref, "text_states": text, "text_mask": mask,
                "canvas_prompts": [x["canvas_prompt"] for x in d], "canvas_visuals": self._visuals(d, "canvas_prompt"),
                "t": torch.tensor([x["t"] for x in d], device=self.device),
                "noise": torch.stack([x["noise"] for x in d]).to(self.device),
                "dropout_seeds": [x["dropout_seed"] for x in d]}

    def loss(self, batch: dict) -> torch.Tensor:
        z, noise, t = batch["z"], batch["noise"], batch["t"]
        text = self._text(batch["text_states"], batch["dropout_seeds"])
        tt = t[:, None, None, None]
        zt = (1 - tt) * z + tt * noise
        source = Conditioning(reference=batch["reference"])
        if self.conn.use_canvas:
            conn = self.conn
            out = self.planner.encode(batch["canvas_prompts"], conn.canvas_tokens, conn.config.grid, conn.canvas_lora,
                                      visuals=batch["canvas_visuals"])
            grid = self.bb.token_grid(self.res, self.res)
            canvas = conn.canvas_for_grid(conn.canvas_encoder(out.canvas_states.float()), *grid)
            with canvas_injected(self.bb, conn.canvas_fuser, canvas, grid):
                pred = self.bb.predict(zt, t * 1000, text, batch["text_mask"], source)
        else:
            pred = self.bb.predict(zt, t * 1000, text, batch["text_mask"], source)
        return (pred.float() - (noise - z)).pow(2).mean()

    def recipe(self) -> dict:
        a, canvas = self.args, self.conn.use_canvas
        return {"task": EDIT_TASK, "stage": a.stage, "caption_dropout": CAPTION_DROPOUT,
                "text_only_dropout": a.text_only_dropout if canvas else 0.0,
                "timestep_sampling": a.timestep_sampling, "canvas_lr_scale": a.canvas_lr_scale if canvas else None,
                "planner_lora_rank": a.planner_lora_rank if self.conn.canvas_lora else 0,
                "dit_lora_rank": a.dit_lora_rank, "resolution": [self.res, self.res], "data": "edit world",
                "identity_share": a.identity_share, "pool": a.pool,
                "base": str(a.base) if a.base else None}

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        dit = merge_dit_lora(state["dit"]) if self.args.dit_lora_rank else state["dit"]
        conn = MetaCanvasConnector(self.conn.config)
        conn.load_state_dict(state["connector"])
        name = self.args.export_name or EXPORT_NAMES[self.args.stage]
        path = out / (name if name.endswith(".safetensors") else name + ".safetensors")
        if self.args.stage != "global":
            save_connector(path, conn, self.bb, dit_state=dit, recipe=recipe, trained_sizes=[[self.res, self.res]])
            return [path]
        self.bb.transformer.load_state_dict(dit)
        folder = out / "backbone"
        save_flux_kontext_folder(folder, self.bb.transformer.eval(), self.bb.vae.float(), self.bb.scheduler)
        save_connector(path, conn, self.bb, dit_state=None, recipe=recipe, trained_sizes=[[self.res, self.res]])
        return [folder, path]


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

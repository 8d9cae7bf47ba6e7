"""Text-to-image: MetaCanvas on a text-to-image backbone, as the paper trains it (the shipped recipe at toy scale).

Stage `global`: a fresh tiny DiT learns text-to-image with global conditioning only (the planner's text states
through the text connector): the tiny world's "pretrained backbone" and global baseline.
Stage `metacanvas`: from a backbone folder, add canvas tokens and the zero-initialised canvas connector and train
(DiT in full or as a LoRA, text connector, canvas tokens, canvas connector; the planner stays frozen).
Stage `global-continue`: the baseline trains on from the same backbone with the same extra budget and seed.

Plain rectified flow: z_t = (1 - t) z + t e, target e - z, t ~ U(0, 1) (the shipped recipe) or logit-normal
(sigmoid of a standard normal, as SD3 and SANA train: more of the middle noise levels, where the tiny DiT decides
shapes, fewer of the noisiest, where it decides placement). Caption dropout 10% (empty prompt for text and canvas)
makes CFG possible; with a canvas, another share drops the DiT's text only, keeping the canvas (optionally only for
captions that state positions, the only ones whose canvas can know where objects go).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones import load_backbone
from ...canvas_lora import lora_targets
from ...checkpoints import load_connector, save_connector
from ...connectors import ConnectorConfig, MetaCanvasConnector
from ...injection import canvas_injected
from ...planner import Planner
from ...world import shapes
from ...world.tiny_models import DIT_HEADS, DIT_LAYERS, IMAGE_SIZE
from ..data import DataStream, DiskCache, Example, open_dataset
from ..dit_lora import add_dit_lora, merge_dit_lora
from .base import Sample, Task, torch_generator

CAPTION_DROPOUT = 0.1
TEXT_ONLY_DROPOUT = 0.1
TIMESTEP_SAMPLING = ("uniform", "logit-normal")
TEXT_ONLY_DROPOUT_ON = ("all", "position")  # which captions the text-only dropout applies to
STAGES = ("global", "metacanvas", "global-continue")


def sample_timestep(rng: np.random.Generator, scheme: str = "uniform") -> float:
    """One training noise level t in (0, 1), from the sample's generator."""
    if scheme == "uniform":
        return float(rng.random())
    if scheme == "logit-normal":
        return float(1.0 / (1.0 + np.exp(-rng.standard_normal())))
    raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, not {scheme!r}")


class TextStateCache:
    """The planner is frozen, so a prompt's text states never change: compute each prompt once.

    Each prompt is encoded alone: in a padded batch its states would differ in the last bits with the batch's
    other prompts, so a resumed run (empty cache) or another split of the batch would drift."""

    def __init__(self, planner: Planner, disk: DiskCache | None = None) -> None:
        self.planner, self.cache, self.disk = planner, {}, disk

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for p in dict.fromkeys(prompts):
            if p not in self.cache:
                key = f"text|{self.planner.name}|{p}"
                states = self.disk.get(key) if self.disk else None
                if states is None:
                    with torch.no_grad():
                        states = self.planner.encode([p]).text_states[0].float()
                    if self.disk:
                        self.disk.put(key, states)
                self.cache[p] = states.to(self.planner.device)
        n = max(self.cache[p].shape[0] for p in prompts)
        states = torch.zeros(len(prompts), n, self.planner.hidden_size, device=self.planner.device)
        mask = torch.zeros(len(prompts), n, dtype=torch.long, device=self.planner.device)
        for i, p in enumerate(prompts):
            s = self.cache[p]
            states[i, : s.shape[0]], mask[i, : s.shape[0]] = s, 1
        return states, mask


def planner_lora(planner: Planner, rank: int) -> dict | None:
    """Config of a canvas-only LoRA of `rank` over all of the planner's attention and MLP layers (alpha = rank)."""
    return {"rank": rank, "alpha": float(rank), "targets": lora_targets(planner.language_model)} if rank else None


def add_recipe_arguments(ap: argparse.ArgumentParser) -> None:
    """The MetaCanvas recipe's flags, the same for every task that trains a DiT with the canvas on its full recipe
    (text-to-image, editing)."""
    ap.add_argument("--dit-lora-rank", type=int, default=0,
                    help="train the DiT as a LoRA of this rank through peft (0 = the whole DiT); exported merged")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute DiT activations in backward")
    ap.add_argument("--planner-lora-rank", type=int, default=0,
                    help="stage metacanvas: rank of a canvas-only LoRA on the frozen planner (0 = none)")
    ap.add_argument("--canvas-lr-scale", type=float, default=1.0,
                    help="LR multiplier for the new canvas parts (tokens, connector); they start from zero")
    ap.add_argument("--planner-lora-lr-scale", type=float, default=1.0,
                    help="LR multiplier for the canvas-only planner LoRA (its own group: at 4x it drifted)")
    ap.add_argument("--text-only-dropout", type=float, default=TEXT_ONLY_DROPOUT,
                    help="stage metacanvas: share of samples whose DiT text is dropped while the canvas keeps the "
                         "prompt (so the DiT must learn to read the canvas)")
    ap.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default="uniform",
                    help="noise levels: uniform (the shipped weights) or logit-normal (SD3/SANA)")
    ap.add_argument("--export-name", help="exported weights' file name (default: by stage)")


def _fresh_tiny_backbone(args: argparse.Namespace):
    """Stage global only: the tiny world's SANA DiT from scratch, with the trained tiny VAE."""
    from diffusers import AutoencoderDC

    from ...backbones.sana import SanaBackbone
    from ...world.tiny_models import new_dit, new_scheduler

    dit = new_dit(1.0 if args.pos_embed else None, args.dit_heads, args.dit_layers)
    return SanaBackbone(dit, AutoencoderDC.from_pretrained(args.vae), new_scheduler(), "tiny-sana")


class TextToImage(Task):
    name = "t2i"

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--stage", choices=STAGES, required=True)
        ap.add_argument("--planner", type=Path, required=True, help="Qwen2.5-VL planner folder (stays frozen)")
        ap.add_argument("--base", type=Path, help="diffusers backbone folder to train from (stages metacanvas and "
                                                  "global-continue)")
        ap.add_argument("--base-connector", type=Path,
                        help="MetaCanvas weights whose text connector to start from (default: a fresh one)")
        ap.add_argument("--vae", type=Path, help="stage global (tiny world): the trained VAE folder")
        ap.add_argument("--pos-embed", action="store_true", help="stage global: sin-cos positional embedding")
        ap.add_argument("--dit-heads", type=int, default=DIT_HEADS, help="stage global: DiT width in heads of 32")
        ap.add_argument("--dit-layers", type=int, default=DIT_LAYERS, help="stage global: DiT depth")
        ap.add_argument("--data", type=Path, help="image folder with metadata.jsonl, a .tar shard or a folder of "
                                                  "shards (default: the shapes world, drawn on the fly)")
        ap.add_argument("--resolution", type=int, default=IMAGE_SIZE, help="training image size (square)")
        ap.add_argument("--cache-dir", type=Path,
                        help="keep --data's VAE latents and the planner's text states here (safetensors), computed "
                             "once per sample; one folder per backbone VAE, planner and resolution")
        add_recipe_arguments(ap)
        ap.add_argument("--text-only-dropout-on", choices=TEXT_ONLY_DROPOUT_ON, default="all",
                        help="stage metacanvas: all captions (the shipped weights) or only those of category "
                             "'position' (metadata field `category`; captions without one count as not position)")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.stage == "global":
            if args.vae is None or args.base is not None:
                ap.error("--stage global builds the tiny world's DiT from scratch: give --vae, not --base")
            if args.dit_lora_rank:
                ap.error("--dit-lora-rank needs a pretrained DiT (--base): stage global trains one from scratch")
        else:
            if args.base is None:
                ap.error(f"--stage {args.stage} trains from a backbone: give --base FOLDER")
            if (args.dit_heads, args.dit_layers) != (DIT_HEADS, DIT_LAYERS) or args.pos_embed:
                ap.error("--dit-heads/--dit-layers/--pos-embed only apply to --stage global; later stages keep "
                         "the --base DiT")
        if args.planner_lora_rank and args.stage != "metacanvas":
            ap.error("--planner-lora-rank only applies to --stage metacanvas (the baselines have no canvas)")
        if (args.text_only_dropout != TEXT_ONLY_DROPOUT or args.text_only_dropout_on != "all") and \
                args.stage != "metacanvas":
            ap.error("--text-only-dropout[-on] only applies to --stage metacanvas (the baselines have no canvas)")
        if not 0.0 <= args.text_only_dropout <= 1.0 - CAPTION_DROPOUT:
            ap.error(f"--text-only-dropout must lie in [0, {1.0 - CAPTION_DROPOUT}] (captions are already dropped "
                     f"for {CAPTION_DROPOUT} of the samples)")

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.args, self.device, self.res = args, device, args.resolution
        self.planner = Planner.from_pretrained(args.planner, dtype=dtype, device=device)
        self.disk = DiskCache(args.cache_dir) if args.cache_dir else None
        self.texts = TextStateCache(self.planner, self.disk)
        if args.stage == "global":
            bb = _fresh_tiny_backbone(args)
            cfg = ConnectorConfig(self.planner.hidden_size, bb.dit_dim, bb.caption_channels, use_canvas=False)
        else:
            bb = load_backbone(args.base)
            cfg = ConnectorConfig(self.planner.hidden_size, bb.dit_dim, bb.caption_channels,
                                  canvas_grid=[1, *bb.token_grid(self.res, self.res)[1:]],
                                  use_canvas=args.stage == "metacanvas",
                                  planner_lora=planner_lora(self.planner, args.planner_lora_rank))
        bb.token_grid(self.res, self.res)  # a size the backbone cannot tile is a clear error up front
        self._attach(bb, cfg, device, dtype)
        self.stream = None if args.data is None else DataStream(open_dataset(args.data, self.res), args.seed,
                                                                args.strict)

    def _attach(self, bb, cfg: ConnectorConfig, device: torch.device, dtype: torch.dtype) -> None:
        """Make `bb` and a connector of `cfg` this task's trained models (the base's text connector, the DiT in full
        or as a LoRA, gradient checkpointing), the frozen VAE in `dtype`: the same for every task on this recipe."""
        args = self.args
        bb.transformer.to(device)
        bb.vae.to(device)
        if dtype != torch.float32:
            bb.vae.to(dtype)
        self.bb, self.conn = bb, MetaCanvasConnector(cfg)
        if args.base_connector:
            self.conn.text_connector.load_state_dict(load_connector(args.base_connector).connector.text_connector
                                                     .state_dict())
        if args.dit_lora_rank:
            add_dit_lora(bb.transformer, args.dit_lora_rank)
        else:
            bb.transformer.requires_grad_(True)
        if args.gradient_checkpointing:
            bb.transformer.enable_gradient_checkpointing()
        self.conn.requires_grad_(True)
        self.latent_shape = bb.latent_shape(1, self.res, self.res)[1:]

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {"dit": self.bb.transformer, "connector": self.conn}

    def param_groups(self) -> list[dict]:
        """DiT (or its LoRA) + text connector at the base LR; the new canvas parts (tokens, connector), which start
        from zero, at --canvas-lr-scale; the planner LoRA on its own at --planner-lora-lr-scale."""
        conn, a = self.conn, self.args
        base = [p for p in self.bb.transformer.parameters() if p.requires_grad]
        base += list(conn.text_connector.parameters())
        canvas = [p for n, p in conn.named_parameters() if not n.startswith(("text_connector.", "canvas_lora."))]
        lora = list(conn.canvas_lora.parameters()) if conn.canvas_lora is not None else []
        groups = [{"params": base}]
        groups += [{"params": canvas, "lr_scale": a.canvas_lr_scale}] if canvas else []
        groups += [{"params": lora, "lr_scale": a.planner_lora_lr_scale}] if lora else []
        return groups

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        a, skipped = self.args, []
        if self.stream is None:
            scene = shapes.sample_scene(rng)
            ex = Example(shapes.model_pixels(shapes.render(scene.objects, self.res, rng)[None])[0], scene.caption,
                         scene.category)
        else:
            ex, skipped = self.stream[step * a.batch + index]
        u = rng.random()  # one draw decides both dropouts: the scope changes which samples lose text, not the stream
        extra = a.text_only_dropout if self.conn.use_canvas and a.text_only_dropout_on in ("all", ex.category) else 0.
        t = sample_timestep(rng, a.timestep_sampling)
        gen = torch_generator(rng)
        cached = self.disk.get(self._latent_key(ex.key)) if self.disk and ex.key else None
        return Sample({
            "image": torch.from_numpy(ex.image), "key": ex.key, "latent": cached,
            "canvas_prompt": "" if u < CAPTION_DROPOUT else ex.caption,
            "text_prompt": "" if u < CAPTION_DROPOUT + extra else ex.caption,
            "t": t,
            "noise": torch.randn(self.latent_shape, generator=gen),
            "dropout_seed": int(torch.randint(2**62, (), generator=gen)),
        }, skipped)

    def _latent_key(self, key: str) -> str:
        return f"latent|{self.args.base or self.args.vae}|{self.args.data}|{key}|{self.res}"

    def batch(self, samples: list[Sample]) -> dict:
        d = [s.data for s in samples]
        todo = [i for i, x in enumerate(d) if x["latent"] is None]
        if todo:
            with torch.no_grad():
                new = self.bb.encode(torch.stack([d[i]["image"] for i in todo]).to(self.device)).float()
            for i, z in zip(todo, new):
                d[i]["latent"] = z
                if self.disk and d[i]["key"]:
                    self.disk.put(self._latent_key(d[i]["key"]), z)
        z = torch.stack([x["latent"].to(self.device) for x in d])
        text_states, text_mask = self.texts([x["text_prompt"] for x in d])
        return {"z": z, "text_states": text_states, "text_mask": text_mask,
                "canvas_prompts": [x["canvas_prompt"] for x in d],
                "t": torch.tensor([x["t"] for x in d], device=self.device),
                "noise": torch.stack([x["noise"] for x in d]).to(self.device),
                "dropout_seeds": [x["dropout_seed"] for x in d]}

    def _text(self, states: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """The text connector per sample, its dropout seeded by the sample: the same masks however the batch is
        split across processes."""
        gen = torch.cuda.default_generators[self.device.index or 0] if self.device.type == "cuda" else \
            torch.default_generator  # the generator nn.Dropout draws from on this device
        state, out = gen.get_state(), []
        for i, seed in enumerate(seeds):
            gen.manual_seed(seed)
            out.append(self.conn.text_connector(states[i: i + 1]))
        gen.set_state(state)
        return torch.cat(out)

    def loss(self, batch: dict) -> torch.Tensor:
        z, noise, t = batch["z"], batch["noise"], batch["t"]
        text = self._text(batch["text_states"], batch["dropout_seeds"])
        tt = t.view(-1, *[1] * (z.ndim - 1))  # images (B, C, h, w) or one-frame clips (B, C, 1, h, w)
        zt = (1 - tt) * z + tt * noise
        if self.conn.use_canvas:
            conn = self.conn
            out = self.planner.encode(batch["canvas_prompts"], conn.canvas_tokens, conn.config.grid, conn.canvas_lora)
            grid = self.bb.token_grid(self.res, self.res)
            canvas = conn.canvas_for_grid(conn.canvas_encoder(out.canvas_states.float()), *grid)
            with canvas_injected(self.bb, conn.canvas_fuser, canvas, grid):
                pred = self.bb.predict(zt, t * 1000, text, batch["text_mask"])
        else:
            pred = self.bb.predict(zt, t * 1000, text, batch["text_mask"])
        return (pred.float() - (noise - z)).pow(2).mean()

    def recipe(self) -> dict:
        a, canvas = self.args, self.conn.use_canvas
        return {"task": "t2i", "stage": a.stage, "caption_dropout": CAPTION_DROPOUT,
                "text_only_dropout": a.text_only_dropout if canvas else 0.0,
                "text_only_dropout_on": a.text_only_dropout_on if canvas else None,
                "pos_embed": a.pos_embed, "timestep_sampling": a.timestep_sampling,
                "canvas_lr_scale": a.canvas_lr_scale if canvas else None,
                "planner_lora_rank": a.planner_lora_rank if self.conn.canvas_lora else 0,
                "planner_lora_lr_scale": a.planner_lora_lr_scale if self.conn.canvas_lora else None,
                "dit_lora_rank": a.dit_lora_rank, "resolution": [self.res, self.res],
                "data": str(a.data) if a.data else "shapes world", "base": str(a.base) if a.base else None}

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        dit = merge_dit_lora(state["dit"]) if self.args.dit_lora_rank else state["dit"]
        conn = MetaCanvasConnector(self.conn.config)
        conn.load_state_dict(state["connector"])
        name = self.args.export_name or {"global": "global_base_t2i", "metacanvas": "metacanvas_t2i",
                                         "global-continue": "global_t2i"}[self.args.stage]
        path = out / (name if name.endswith(".safetensors") else name + ".safetensors")
        sizes = [[self.res, self.res]]  # sampling far from the trained size warns
        if self.args.stage != "global":
            save_connector(path, conn, self.bb, dit_state=dit, recipe=recipe, trained_sizes=sizes)
            return [path]
        from ...world.tiny_models import save_sana_pipeline_folder

        self.bb.transformer.load_state_dict(dit)
        folder = out / "backbone"
        save_sana_pipeline_folder(folder, self.bb.transformer.eval(), self.bb.vae.float(), self.bb.scheduler)
        save_connector(path, conn, self.bb, dit_state=None, recipe=recipe, trained_sizes=sizes)
        return [folder, path]


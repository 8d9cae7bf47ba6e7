"""The one training task of every canvas-DiT stage of every generation task: MetaCanvas as the paper trains it.

Stages: `global` trains a fresh DiT with global conditioning only (the planner's text states through the text
connector): the tiny world's "pretrained backbone" and global baseline. `metacanvas` adds canvas tokens and the
zero-initialised canvas connector to a --base backbone and trains them with the DiT (in full or as a LoRA) and the
text connector; the planner stays frozen. `global-continue` trains the baseline on with the same extra budget, data
and seed.

What differs between generation tasks is a `Source` (one per task module: t2i.py, edit.py, video.py,
video_context.py): what an example is and where it comes from, what the planner sees before each prompt, what the
DiT is conditioned on, how a fresh backbone is built and saved. Everything else lives here once:

- dropout: one draw per sample decides both dropouts, caption dropout (10 %: empty prompt for text and canvas, so
  CFG works; the planner then sees no image either, as CFG's unconditional plan does) and, with a canvas,
  text-only dropout (the DiT's text is dropped, the canvas keeps the prompt, so the DiT must learn to read the
  canvas);
- noise levels (uniform or logit-normal) and plain rectified flow: z_t = (1 - t) z + t e, target e - z; frames the
  conditioning gives clean are no target; every sample weighs the same, whatever group it is computed in;
- the text connector's dropout seeded per sample (the same masks however the batch is split across processes);
- optimizer groups (the new canvas parts at --canvas-lr-scale), the DiT in full or as a peft LoRA, checkpointing;
- the export: the connector, the DiT part beside it as trained (an unmerged LoRA or the DiT folder), and for stage
  global the backbone folder.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...backbones import load_backbone
from ...backbones.base import BackboneAdapter, Conditioning
from ...canvas_lora import lora_targets
from ...checkpoints import load_connector, save_connector
from ...connectors import ConnectorConfig, MetaCanvasConnector
from ...injection import canvas_injected
from ...planner import Planner
from ..data import DiskCache
from ..dit_lora import add_dit_lora, merge_dit_lora
from ..world_pool import FrozenMemo, module_fingerprint
from .base import Sample, Task, torch_generator

CAPTION_DROPOUT = 0.1
TEXT_ONLY_DROPOUT = 0.1
TIMESTEP_SAMPLING = ("uniform", "logit-normal")
STAGES = ("global", "metacanvas", "global-continue")


def sample_timestep(rng: np.random.Generator, scheme: str = "uniform") -> float:
    """One training noise level t in (0, 1), from the sample's generator."""
    if scheme == "uniform":
        return float(rng.random())
    if scheme == "logit-normal":
        return float(1.0 / (1.0 + np.exp(-rng.standard_normal())))
    raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, not {scheme!r}")


def planner_lora(planner: Planner, rank: int) -> dict | None:
    """Config of a canvas-only LoRA of `rank` over all of the planner's attention and MLP layers (alpha = rank)."""
    return {"rank": rank, "alpha": float(rank), "targets": lora_targets(planner.language_model)} if rank else None


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


class TextStateCache:
    """The planner is frozen, so a prompt's text states never change: compute each prompt once (kept exactly, in
    memory up to a bound and on disk under --cache-dir).

    Each prompt is encoded alone: in a padded batch its states would differ in the last bits with the batch's other
    prompts, so a resumed run (empty cache) or another split of the batch would drift."""

    def __init__(self, planner: Planner, disk: DiskCache | None = None, max_bytes: int = 4 << 30) -> None:
        self.planner = planner
        self.memo = FrozenMemo(f"text|{planner.name}", disk, max_bytes, half=False)

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        def encode(todo: list[int]) -> list[torch.Tensor]:
            with torch.no_grad():
                return [self.planner.encode([prompts[i]]).text_states[0].float() for i in todo]

        return padded(self.memo.many(prompts, encode), self.planner.hidden_size, self.planner.device)


def take(x: torch.Tensor | list[torch.Tensor], idx: list[int]) -> torch.Tensor:
    """Rows `idx` of a batched tensor, or those entries of a list of per-sample tensors stacked."""
    return torch.stack([x[i] for i in idx]) if isinstance(x, list) else x[idx]


@dataclass
class Drawn:
    """One example a source drew: the DiT's target (pixels in the source's own layout), its caption, and what else
    the source needs later (a source image, references, a start frame)."""

    target: Any
    caption: str
    key: str | None = None  # its identity in a fixed pool or dataset: what frozen models compute from it is cached
    category: str | None = None  # shapes-world caption category, where known (text-only dropout's scope)
    extra: dict = field(default_factory=dict)


class Source(ABC):
    """What one generation task trains on and how its DiT is conditioned. A source is made per run, draws examples,
    turns a batch of them into latents and conditioning (frozen encoders only), and knows its backbone family."""

    task: ClassVar[str]  # the weights' recipe task (what sampling checks them against)
    stages: ClassVar[tuple[str, ...]] = STAGES
    export_names: ClassVar[dict[str, str]]  # stage -> exported weights' file stem
    kinds: ClassVar[tuple[str, ...]] = ("",)  # groups of samples that go through the DiT together, in this order
    text_sees_visuals: ClassVar[bool] = False  # the DiT's text states are read after the planner saw the visuals
    exports_folder: ClassVar[bool] = False  # every stage (not only global) writes its backbone folder

    def __init__(self, args: argparse.Namespace, device: torch.device, disk: DiskCache | None) -> None:
        self.args, self.device, self.disk = args, device, disk

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        """The source's own flags (data, sizes, shares)."""

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Reject flag combinations of the source's own flags."""

    @abstractmethod
    def fresh_backbone(self) -> BackboneAdapter:
        """Stage global: a fresh DiT of the tiny world on the trained VAE (--vae)."""

    def from_base(self, bb: BackboneAdapter) -> BackboneAdapter:
        """The --base backbone as this task trains it (checked, or e.g. widened for conditioning channels)."""
        return bb

    def bind(self, bb: BackboneAdapter) -> None:
        """Learn the backbone's sizes once it is built (token grids, latent shapes, cache fingerprints)."""
        self.bb = bb
        self.latents = FrozenMemo(f"{bb.architecture}-latents|{module_fingerprint(bb.vae)}", self.disk)

    @abstractmethod
    def canvas(self) -> dict:
        """ConnectorConfig fields of this task's canvas: `canvas_grid` [keyframes, rows, cols] (and for clips
        `keyframe_seconds`)."""

    @abstractmethod
    def example(self, rng: np.random.Generator, position: int) -> tuple[Drawn, list[str]]:
        """The example of stream `position` (step x global batch + index) or one drawn from `rng`, and the broken
        files passed over to reach it."""

    def kind(self, rng: np.random.Generator, ex: Drawn) -> str:
        """Which group the sample goes in (drawn after the dropout draw)."""
        return self.kinds[0]

    def text_only_applies(self, ex: Drawn) -> bool:
        return True

    @abstractmethod
    def noise_shape(self, kind: str) -> tuple[int, ...]:
        """The latent shape (without batch) of a sample of `kind`."""

    def visuals(self, ex: Drawn, kind: str) -> list:
        """What the planner sees before the sample's prompt (images, a `Video`): nothing by default."""
        return []

    @abstractmethod
    def inputs(self, drawn: list[Drawn], kinds: list[str]) -> dict:
        """The batch's frozen-encoder outputs: `z` (target latents: a tensor, or a list of per-sample tensors when
        kinds differ in shape) and whatever `conditioning` reads."""

    def conditioning(self, batch: dict, idx: list[int], kind: str) -> Conditioning:
        return Conditioning()

    @abstractmethod
    def grid(self, kind: str) -> tuple[int, int, int]:
        """The DiT's token grid (frames, rows, cols) of a sample of `kind`."""

    def recipe(self) -> dict:
        return {"task": self.task}

    def validation_input(self, ex: Drawn) -> tuple[str, Any]:
        """The sampling task validation runs (`tasks.TASKS`) and what it is given besides the prompt, from a fixed
        example `ex` of the data (an edit's source image, a clip to edit): by default the recipe's task, nothing."""
        return self.task, None

    @abstractmethod
    def trained_sizes(self) -> list[list[int]]:
        ...

    @abstractmethod
    def save_folder(self, folder: Path, bb: BackboneAdapter) -> None:
        """Write the (trained) backbone as a pipeline folder of its family."""


def canvas_grid_size(text: str) -> tuple[int, int]:
    """argparse type of --canvas-grid: ROWSxCOLS."""
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.isdigit() or not cols.isdigit() or int(rows) < 1 or int(cols) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLS, e.g. 11x20")
    return int(rows), int(cols)


def add_recipe_arguments(ap: argparse.ArgumentParser) -> None:
    """The MetaCanvas recipe's flags, the same for every generation task."""
    ap.add_argument("--dit-lora-rank", type=int, default=0,
                    help="train the DiT as a LoRA of this rank through peft (0 = the whole DiT); exported unmerged "
                         "beside the weights (<name>_dit_lora.safetensors)")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="recompute activations in backward: the DiT's and, in stage metacanvas, the planner's (which "
                         "the canvas tokens' gradient crosses; not with --planner-lora-rank)")
    ap.add_argument("--planner-lora-rank", type=int, default=0,
                    help="stage metacanvas: rank of a canvas-only LoRA on the frozen planner (0 = none)")
    ap.add_argument("--canvas-lr-scale", type=float, default=1.0,
                    help="LR multiplier for the new canvas parts (tokens, connector); they start from zero")
    ap.add_argument("--freeze-canvas-tokens", action="store_true",
                    help="stage metacanvas: keep the canvas tokens at their random init, so their planner states keep "
                         "depending on the prompt (on a DiT without absolute positions trained tokens learn to make "
                         "the planner ignore it: `probe`'s prompt_dependence)")
    ap.add_argument("--planner-lora-lr-scale", type=float, default=1.0,
                    help="LR multiplier for the canvas-only planner LoRA (its own group: at 4x it drifted)")
    ap.add_argument("--text-only-dropout", type=float, default=TEXT_ONLY_DROPOUT,
                    help="stage metacanvas: share of samples whose DiT text is dropped while the canvas keeps the "
                         "prompt (so the DiT must learn to read the canvas)")
    ap.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default="uniform",
                    help="noise levels: uniform (the shipped weights) or logit-normal (SD3/SANA)")
    ap.add_argument("--export-name", help="exported weights' file name (default: by stage)")
    ap.add_argument("--canvas-grid", type=canvas_grid_size,
                    help="stage metacanvas: the canvas's rows x cols, e.g. 11x20 (default: the DiT's token grid); a "
                         "coarser canvas is resampled to the token grid, and costs the planner far fewer tokens "
                         "(the paper's Wan 2.2 canvas is 11x20 for a 22x40 token grid)")
    ap.add_argument("--memory-cache-gb", type=float, default=4.0,
                    help="each in-memory cache of frozen outputs (latents, planner states) holds at most this; the "
                         "least recently used go (and are read from --cache-dir, or computed, again)")


class CanvasDiTTask(Task):
    """A canvas-DiT training task: this class with a `source`. Subclasses only name themselves and their source."""

    source: ClassVar[type[Source]]
    validates = True

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        src = cls.source
        ap.add_argument("--stage", choices=src.stages, required=True)
        ap.add_argument("--planner", type=Path, required=True, help="Qwen2.5-VL planner folder (stays frozen)")
        ap.add_argument("--base", type=Path, help="backbone folder to train from (stages metacanvas and "
                                                  "global-continue; stage global: to pretrain further)")
        ap.add_argument("--base-connector", type=Path,
                        help="MetaCanvas weights whose text connector to start from (default: a fresh one)")
        if "global" in src.stages:
            ap.add_argument("--vae", type=Path, help="stage global (tiny world): the trained VAE folder")
        src.add_arguments(ap)
        add_recipe_arguments(ap)

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.stage == "global":
            if (args.vae is None) == (args.base is None):
                ap.error("--stage global builds the tiny world's DiT from scratch on a trained VAE (give --vae) or "
                         "pretrains a --base backbone further (give --base, and its --base-connector), not both")
            if args.dit_lora_rank:
                ap.error("--dit-lora-rank only applies to the later stages: stage global trains the whole DiT")
        elif args.base is None:
            ap.error(f"--stage {args.stage} trains from a backbone: give --base FOLDER")
        elif getattr(args, "vae", None) is not None:
            ap.error("--vae only applies to --stage global; later stages keep the --base backbone's VAE")
        if args.stage != "metacanvas" and (args.planner_lora_rank or args.text_only_dropout != TEXT_ONLY_DROPOUT):
            ap.error("--planner-lora-rank and --text-only-dropout only apply to --stage metacanvas (the baselines "
                     "have no canvas)")
        if not 0.0 <= args.text_only_dropout <= 1.0 - CAPTION_DROPOUT:
            ap.error(f"--text-only-dropout must lie in [0, {1.0 - CAPTION_DROPOUT}] (captions are already dropped "
                     f"for {CAPTION_DROPOUT} of the samples)")
        if args.freeze_canvas_tokens and args.stage != "metacanvas":
            ap.error("--freeze-canvas-tokens only applies to --stage metacanvas (the baselines have no canvas)")
        if args.canvas_grid is not None and args.stage != "metacanvas":
            ap.error("--canvas-grid only applies to --stage metacanvas (the baselines have no canvas)")
        if args.memory_cache_gb < 0:
            ap.error("--memory-cache-gb must be 0 or more")
        cls.source.check_arguments(ap, args)

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.args, self.device = args, device
        self.planner = Planner.from_pretrained(args.planner, dtype=dtype, device=device)
        disk = DiskCache(args.cache_dir) if getattr(args, "cache_dir", None) else None
        budget = int(args.memory_cache_gb * (1 << 30))
        self.texts = TextStateCache(self.planner, disk, budget)
        self.seen = FrozenMemo(f"planner-seen|{module_fingerprint(self.planner.model)}", disk, budget)
        self.src = src = self.source(args, device, disk)
        # Stage global starts fresh, or carries a published base's pretraining on (a budget spread over sessions).
        bb = src.fresh_backbone() if args.base is None else src.from_base(load_backbone(args.base))
        src.bind(bb)
        src.latents.max_bytes = budget
        canvas = src.canvas()
        if args.canvas_grid is not None:
            canvas["canvas_grid"] = [canvas["canvas_grid"][0], *args.canvas_grid]
        cfg = ConnectorConfig(self.planner.hidden_size, bb.dit_dim, bb.caption_channels, **canvas,
                              use_canvas=args.stage == "metacanvas",
                              planner_lora=planner_lora(self.planner, args.planner_lora_rank))
        self._attach(bb, cfg, device, dtype)
        if args.gradient_checkpointing and cfg.use_canvas and self.conn.canvas_lora is None:
            # The canvas tokens' gradient crosses the frozen planner: keep only its layers' inputs, recompute the
            # rest in backward (at 7B, the planner's activations for a few thousand canvas tokens are tens of GB).
            # Not with a canvas-only planner LoRA: its hooks act during one forward, a recomputation would miss them.
            lm = self.planner.language_model
            lm.activation_checkpointing_enable({"use_reentrant": False})
            lm.train()  # transformers checkpoints only in train mode; the planner has no dropout to switch on

    def _attach(self, bb: BackboneAdapter, cfg: ConnectorConfig, device: torch.device, dtype: torch.dtype) -> None:
        """Make `bb` and a connector of `cfg` the trained models (the base's text connector, the DiT in full or as a
        LoRA, gradient checkpointing), the frozen VAE in `dtype`."""
        args = self.args
        bb.transformer.to(device)
        bb.vae.to(device)
        if dtype != torch.float32:
            bb.vae.to(dtype)
        bb.vae.eval().requires_grad_(False)
        self.bb, self.conn = bb, MetaCanvasConnector(cfg)
        if args.base_connector:
            self.conn.text_connector.load_state_dict(load_connector(args.base_connector).connector.text_connector
                                                     .state_dict())
        if args.dit_lora_rank:
            add_dit_lora(bb.transformer, args.dit_lora_rank)
            if dtype != torch.float32:  # the frozen DiT in the run's precision; only the LoRA is trained, in fp32
                for p in bb.transformer.parameters():
                    if not p.requires_grad:
                        p.data = p.data.to(dtype)
        else:
            bb.transformer.requires_grad_(True)
        if args.gradient_checkpointing:
            bb.transformer.enable_gradient_checkpointing()
        self.conn.requires_grad_(True)
        if args.freeze_canvas_tokens:
            self.conn.canvas_tokens.requires_grad_(False)

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {"dit": self.bb.transformer, "connector": self.conn}

    def param_groups(self) -> list[dict]:
        """DiT (or its LoRA) + text connector at the base LR; the new canvas parts (tokens, connector), which start
        from zero, at --canvas-lr-scale; the planner LoRA on its own at --planner-lora-lr-scale."""
        conn, a = self.conn, self.args
        base = [p for p in self.bb.transformer.parameters() if p.requires_grad]
        base += list(conn.text_connector.parameters())
        canvas = [p for n, p in conn.named_parameters()
                  if p.requires_grad and not n.startswith(("text_connector.", "canvas_lora."))]
        lora = list(conn.canvas_lora.parameters()) if conn.canvas_lora is not None else []
        groups = [{"params": base}]
        groups += [{"params": canvas, "lr_scale": a.canvas_lr_scale}] if canvas else []
        groups += [{"params": lora, "lr_scale": a.planner_lora_lr_scale}] if lora else []
        return groups

    # -- samples ---------------------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        a = self.args
        ex, skipped = self.src.example(rng, step * a.batch + index)
        u = rng.random()  # one draw decides both dropouts: their scope changes which samples lose text, not the stream
        canvas = self.conn.use_canvas
        extra = a.text_only_dropout if canvas and self.src.text_only_applies(ex) else 0.0
        kind = self.src.kind(rng, ex)
        t = sample_timestep(rng, a.timestep_sampling)
        gen = torch_generator(rng)
        return Sample({
            "ex": ex, "kind": kind,
            "canvas_prompt": "" if u < CAPTION_DROPOUT else ex.caption,
            "text_prompt": "" if u < CAPTION_DROPOUT + extra else ex.caption,
            "t": t,
            "noise": torch.randn(self.src.noise_shape(kind), generator=gen),
            "dropout_seed": int(torch.randint(2**62, (), generator=gen)),
        }, skipped)

    def _seen(self, d: list[dict], key: str) -> list[list]:
        """What the planner sees before each sample's prompt `key`: the source's visuals, unless the prompt was
        dropped (CFG's unconditional plan is the empty prompt without visuals)."""
        return [self.src.visuals(x["ex"], x["kind"]) if x[key] else [] for x in d]

    def _text_states(self, d: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [x["text_prompt"] for x in d]
        if not self.src.text_sees_visuals:
            return self.texts(prompts)
        visuals = self._seen(d, "text_prompt")

        def encode(todo: list[int]) -> list[torch.Tensor]:
            states, mask = seen_text_states(self.planner, [prompts[i] for i in todo], [visuals[i] for i in todo])
            return [s[: int(m.sum())] for s, m in zip(states, mask)]

        keys = [f"{x['ex'].key}:{p}" if x["ex"].key is not None and p else None for x, p in zip(d, prompts)]
        return padded(self.seen.many(keys, encode), self.planner.hidden_size, self.device)

    def batch(self, samples: list[Sample]) -> dict:
        d = [s.data for s in samples]
        kinds = [x["kind"] for x in d]
        text_states, text_mask = self._text_states(d)
        return {**self.src.inputs([x["ex"] for x in d], kinds),
                "text_states": text_states, "text_mask": text_mask, "kind": kinds,
                "canvas_prompts": [x["canvas_prompt"] for x in d], "canvas_visuals": self._seen(d, "canvas_prompt"),
                "t": torch.tensor([x["t"] for x in d], device=self.device),
                "noise": [x["noise"].to(self.device) for x in d],
                "dropout_seeds": [x["dropout_seed"] for x in d]}

    # -- loss ------------------------------------------------------------------------------------------------------

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

    def _group_loss(self, batch: dict, idx: list[int], text: torch.Tensor, kind: str) -> torch.Tensor:
        """Summed per-sample flow-matching losses of samples `idx`, all of one kind; the frames the conditioning
        gives clean are no target."""
        cond, grid = self.src.conditioning(batch, idx, kind), self.src.grid(kind)
        z, noise, t = take(batch["z"], idx), take(batch["noise"], idx), batch["t"][idx]
        tt = t.view(-1, *[1] * (z.ndim - 1))
        zt = self.bb.condition((1 - tt) * z + tt * noise, cond)
        args = (zt, t * 1000, text[idx], batch["text_mask"][idx], cond)
        if self.conn.use_canvas:
            conn = self.conn
            visuals = [batch["canvas_visuals"][i] for i in idx]
            out = self.planner.encode([batch["canvas_prompts"][i] for i in idx], conn.canvas_tokens, conn.config.grid,
                                      conn.canvas_lora, visuals=visuals)
            canvas = conn.canvas_for_grid(conn.canvas_encoder(out.canvas_states.float()), *grid)
            with canvas_injected(self.bb, conn.canvas_fuser, canvas, grid, clean_frames=cond.clean_frames):
                pred = self.bb.predict(*args)
        else:
            pred = self.bb.predict(*args)
        err = pred.float() - (noise - z)
        if cond.clean_frames:
            err = err[:, :, cond.clean_frames:]
        return err.pow(2).flatten(1).mean(1).sum()

    def loss(self, batch: dict) -> torch.Tensor:
        text = self._text(batch["text_states"], batch["dropout_seeds"])
        total = torch.zeros((), device=self.device)
        for kind in self.src.kinds:
            idx = [i for i, k in enumerate(batch["kind"]) if k == kind]
            if idx:
                total = total + self._group_loss(batch, idx, text, kind)
        return total / len(batch["kind"])

    # -- validation ------------------------------------------------------------------------------------------------

    def validate(self, prompts: list[str], steps: int, cfg: float, seed: int) -> list[torch.Tensor]:
        """The prompts through the sampling pipeline (the task's own inputs, plan and sampling loop) with the
        weights as they are now: the live connector and DiT (its LoRA switched on), nothing copied. Tasks given an
        input (edit: a source image; video-context: a clip to edit or references) take it from the data's first
        example (position 0, or the world's example of a fixed generator)."""
        from ...checkpoints import MetaCanvasWeights
        from ...pipeline import MetaCanvasPipeline
        from ...sampling import InjectedBackbone

        ex, _ = self.src.example(np.random.default_rng([seed, 2**31 - 1]), 0)
        task, given = self.src.validation_input(ex)
        weights = MetaCanvasWeights(self.conn, self.bb.architecture, "validation", recipe=self.recipe())
        pipe = MetaCanvasPipeline(self.planner, InjectedBackbone(self.bb).inject(weights))
        size = self.src.trained_sizes()[0]
        keeps_size = given is not None and task == "video-edit"  # a clip to edit is sampled at its own size
        sizes = {} if keeps_size else dict(width=size[0], height=size[1], frames=size[2] if len(size) > 2 else None)
        out = pipe(prompts, task=task, given=given, steps=steps, cfg=cfg, seed=seed, fps=getattr(self.src, "fps", 8.0),
                   where="validation", **sizes)
        frames = out.images.shape[0] // len(prompts)
        return list(out.images.reshape(len(prompts), frames, *out.images.shape[1:]))

    # -- export ----------------------------------------------------------------------------------------------------

    def recipe(self) -> dict:
        a, canvas = self.args, self.conn.use_canvas
        return {**self.src.recipe(), "stage": a.stage, "caption_dropout": CAPTION_DROPOUT,
                "text_only_dropout": a.text_only_dropout if canvas else 0.0,
                "timestep_sampling": a.timestep_sampling, "canvas_lr_scale": a.canvas_lr_scale if canvas else None,
                "planner_lora_rank": a.planner_lora_rank if self.conn.canvas_lora else 0,
                "planner_lora_lr_scale": a.planner_lora_lr_scale if self.conn.canvas_lora else None,
                "dit_lora_rank": a.dit_lora_rank, "base": str(a.base) if a.base else None,
                "canvas_grid": self.conn.config.canvas_grid if canvas else None,
                "freeze_canvas_tokens": a.freeze_canvas_tokens if canvas else None,
                "gradient_checkpointing": a.gradient_checkpointing}

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        """Stage global: the backbone folder and the weights (text connector). Later stages: the weights and, beside
        them, the DiT part as it was trained: the LoRA unmerged (`<name>_dit_lora.safetensors`) or the fine-tuned
        DiT (`<name>_dit/`); a source that `exports_folder` also writes its backbone folder (the trained DiT)."""
        lora = self.args.dit_lora_rank > 0
        conn = MetaCanvasConnector(self.conn.config)
        conn.load_state_dict(state["connector"])
        name = self.args.export_name or self.src.export_names[self.args.stage]
        path = out / (name if name.endswith(".safetensors") else name + ".safetensors")
        sizes = self.src.trained_sizes()  # sampling far from the trained sizes warns
        written = []
        if self.args.stage == "global" or self.src.exports_folder:
            if lora:  # the folder holds the plain DiT, the LoRA merged in
                self.bb.transformer.unload_lora()
            self.bb.transformer.load_state_dict(merge_dit_lora(state["dit"]) if lora else state["dit"])
            self.src.save_folder(out / "backbone", self.bb)
            written.append(out / "backbone")
        if self.args.stage == "global":
            part = {}
        elif lora:  # peft's keys without the adapter's name, as diffusers' load_lora_adapter reads them
            part = {"dit_lora": {k.replace(".default.", "."): v for k, v in state["dit"].items() if ".lora_" in k}}
        else:
            part = {"dit_state": state["dit"]}
        return written + save_connector(path, conn, self.bb, recipe=recipe, trained_sizes=sizes, **part)

"""Train the tiny SANA backbone like the paper, at toy scale.

Stage `global`: a fresh DiT learns text-to-image with global conditioning only (the planner's text states through
the text connector). Its result is both the "pretrained backbone" and the global baseline.
Stage `metacanvas`: from that backbone, add canvas tokens and the zero-initialised canvas connector and train on
(DiT, text connector, canvas tokens, canvas connector; the planner stays frozen).
Stage `global-continue`: the baseline trains on from the same backbone with the same extra budget and seed.

Plain rectified flow: z_t = (1 - t) z + t e, target e - z, t ~ U(0, 1) (the shipped recipe) or, optionally,
logit-normal (sigmoid of a standard normal, as SD3 and SANA train), which trains more on the middle noise levels
(where the tiny DiT decides shapes) and less on the noisiest (where it decides placement). Caption dropout 10%
(empty prompt for text and canvas) makes CFG possible; with a canvas, another 10% drop the text only, keeping the
canvas (optionally only for captions that state positions, the only ones whose canvas can know where objects go).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..backbones import load_backbone
from ..backbones.sana import SanaBackbone
from ..canvas_lora import lora_targets
from ..checkpoints import load_connector, save_connector
from ..connectors import ConnectorConfig, MetaCanvasConnector
from ..injection import canvas_injected
from ..planner import Planner
from ..world import shapes
from ..world.tiny_models import DIT_HEADS, DIT_LAYERS, IMAGE_SIZE, new_dit, new_scheduler, save_sana_pipeline_folder
from .loop import ResumableRun

CAPTION_DROPOUT = 0.1
TEXT_ONLY_DROPOUT = 0.1
TIMESTEP_SAMPLING = ("uniform", "logit-normal")
# Which captions the text-only dropout applies to: all, or only those that state positions.
TEXT_ONLY_DROPOUT_ON = ("all", "position")


def sample_timesteps(rng: np.random.Generator, batch: int, scheme: str = "uniform") -> torch.Tensor:
    """Training noise levels t in (0, 1) for one batch, drawn from the step's generator (so a resume repeats them)."""
    if scheme == "uniform":
        t = rng.random(batch)
    elif scheme == "logit-normal":
        t = 1.0 / (1.0 + np.exp(-rng.standard_normal(batch)))
    else:
        raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, not {scheme!r}")
    return torch.from_numpy(t).float()


class TextStateCache:
    """The planner is frozen, so a prompt's text states never change: compute each prompt once.

    Each prompt is encoded alone: in a padded batch its states would differ in the last bits with the batch's
    other prompts, so a resumed run (empty cache) would drift from an uninterrupted one."""

    def __init__(self, planner: Planner) -> None:
        self.planner, self.cache = planner, {}

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for p in dict.fromkeys(prompts):
            if p not in self.cache:
                with torch.no_grad():
                    self.cache[p] = self.planner.encode([p]).text_states[0]
        n = max(self.cache[p].shape[0] for p in prompts)
        states = torch.zeros(len(prompts), n, self.planner.hidden_size)
        mask = torch.zeros(len(prompts), n, dtype=torch.long)
        for i, p in enumerate(prompts):
            s = self.cache[p]
            states[i, : s.shape[0]], mask[i, : s.shape[0]] = s, 1
        return states, mask


def training_step(
    bb: SanaBackbone, conn: MetaCanvasConnector, planner: Planner, texts: TextStateCache, rng, batch: int,
    text_only_dropout: float = TEXT_ONLY_DROPOUT, timestep_sampling: str = "uniform", text_only_dropout_on: str = "all",
):
    imgs, scenes = shapes.sample_batch(rng, batch, IMAGE_SIZE)
    with torch.no_grad():
        z = bb.encode(torch.from_numpy(imgs))
    prompts = [s.caption for s in scenes]
    u = rng.random(batch)
    canvas_prompts = ["" if x < CAPTION_DROPOUT else p for x, p in zip(u, prompts)]
    if text_only_dropout_on not in TEXT_ONLY_DROPOUT_ON:
        raise ValueError(f"text_only_dropout_on must be one of {TEXT_ONLY_DROPOUT_ON}, not {text_only_dropout_on!r}")
    # The same draws `u` decide both dropouts, so the scope changes which samples lose their text, not the stream.
    extra = [text_only_dropout if conn.use_canvas and text_only_dropout_on in ("all", s.category) else 0.0
             for s in scenes]
    text_prompts = ["" if x < CAPTION_DROPOUT + e else p for x, e, p in zip(u, extra, prompts)]
    text_states, text_mask = texts(text_prompts)
    text = conn.text_connector(text_states)
    t = sample_timesteps(rng, batch, timestep_sampling)
    noise = torch.randn_like(z)
    zt = (1 - t[:, None, None, None]) * z + t[:, None, None, None] * noise
    timestep = t * 1000
    if conn.use_canvas:
        out = planner.encode(canvas_prompts, conn.canvas_tokens, conn.config.grid, conn.canvas_lora)
        grid = bb.token_grid(IMAGE_SIZE, IMAGE_SIZE)
        canvas = conn.canvas_for_grid(conn.canvas_encoder(out.canvas_states), *grid)
        with canvas_injected(bb, conn.canvas_fuser, canvas, grid):
            pred = bb.predict(zt, timestep, text, text_mask)
    else:
        pred = bb.predict(zt, timestep, text, text_mask)
    return {"loss": (pred - (noise - z)).pow(2).mean()}


def param_groups(
    bb: SanaBackbone, conn: MetaCanvasConnector, canvas_lr_scale: float, lora_lr_scale: float
) -> list[dict]:
    """Optimizer groups: DiT + text connector at the base LR; the new canvas parts (tokens, connector), which start
    from zero, at `canvas_lr_scale`; the planner LoRA on its own at `lora_lr_scale` (it drifted at the canvas 4x)."""
    base = list(bb.transformer.parameters()) + list(conn.text_connector.parameters())
    canvas = [p for n, p in conn.named_parameters() if not n.startswith(("text_connector.", "canvas_lora."))]
    lora = list(conn.canvas_lora.parameters()) if conn.canvas_lora is not None else []
    groups = [{"params": base}]
    groups += [{"params": canvas, "lr_scale": canvas_lr_scale}] if canvas else []
    groups += [{"params": lora, "lr_scale": lora_lr_scale}] if lora else []
    return groups


def planner_lora(planner: Planner, rank: int) -> dict | None:
    """Config of a canvas-only LoRA of `rank` over all of the planner's attention and MLP layers (alpha = rank)."""
    return {"rank": rank, "alpha": float(rank), "targets": lora_targets(planner.language_model)} if rank else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Train the tiny SANA backbone and MetaCanvas connectors on the shapes world.")
    ap.add_argument("--stage", choices=("global", "metacanvas", "global-continue"), required=True)
    ap.add_argument("--planner", type=Path, required=True, help="trained planner folder")
    ap.add_argument("--vae", type=Path, help="trained VAE folder (stage global)")
    ap.add_argument("--base", type=Path, help="backbone folder + its connector to continue from (later stages)")
    ap.add_argument("--base-connector", type=Path, help="the base backbone's text connector checkpoint")
    ap.add_argument("--out", type=Path, required=True, help="backbone folder (stage global) or .safetensors")
    ap.add_argument("--out-connector", type=Path, help="stage global: where to write its text connector")
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cooldown", type=int, default=0,
                    help="the LR falls linearly to zero over this many final steps (0 = constant to the end)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="decay of a weight average kept over the cooldown and written out (e.g. 0.999; 0 = none)")
    ap.add_argument("--pos-embed", action="store_true", help="give the DiT a sin-cos positional embedding")
    ap.add_argument("--dit-heads", type=int, default=DIT_HEADS, help="stage global: DiT width in heads of 32")
    ap.add_argument("--dit-layers", type=int, default=DIT_LAYERS, help="stage global: DiT depth")
    ap.add_argument("--planner-lora-rank", type=int, default=0,
                    help="stage metacanvas: rank of a canvas-only LoRA on the frozen planner (0 = none)")
    ap.add_argument("--canvas-lr-scale", type=float, default=1.0,
                    help="LR multiplier for the new canvas parts (tokens, connector); they start from zero")
    ap.add_argument("--planner-lora-lr-scale", type=float, default=1.0,
                    help="LR multiplier for the canvas-only planner LoRA (its own group: at 4x it drifted)")
    ap.add_argument("--text-only-dropout", type=float, default=TEXT_ONLY_DROPOUT,
                    help="stage metacanvas: share of samples whose DiT text is dropped while the canvas keeps the "
                         "prompt (so the DiT must learn to read the canvas)")
    ap.add_argument("--text-only-dropout-on", choices=TEXT_ONLY_DROPOUT_ON, default="all",
                    help="stage metacanvas: apply the text-only dropout to all captions (the shipped weights) or only "
                         "to those that state positions (elsewhere the canvas cannot know where objects go)")
    ap.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default="uniform",
                    help="how training draws noise levels: uniform (the shipped weights) or logit-normal (SD3/SANA)")
    args = ap.parse_args(argv)
    if args.planner_lora_rank and args.stage != "metacanvas":
        ap.error("--planner-lora-rank only applies to --stage metacanvas (the baselines have no canvas)")
    if args.stage != "global" and (args.dit_heads, args.dit_layers) != (DIT_HEADS, DIT_LAYERS):
        ap.error("--dit-heads/--dit-layers only apply to --stage global; later stages keep the --base DiT's size")
    if (args.text_only_dropout != TEXT_ONLY_DROPOUT or args.text_only_dropout_on != "all") and \
            args.stage != "metacanvas":
        ap.error("--text-only-dropout[-on] only applies to --stage metacanvas (the baselines have no canvas)")
    if not 0.0 <= args.text_only_dropout <= 1.0 - CAPTION_DROPOUT:
        ap.error(f"--text-only-dropout must lie in [0, {1.0 - CAPTION_DROPOUT}] (captions are already dropped for "
                 f"{CAPTION_DROPOUT} of the samples)")
    torch.manual_seed(args.seed)
    planner = Planner.from_pretrained(args.planner)
    texts = TextStateCache(planner)

    if args.stage == "global":
        from diffusers import AutoencoderDC

        dit = new_dit(1.0 if args.pos_embed else None, args.dit_heads, args.dit_layers)
        bb = SanaBackbone(dit, AutoencoderDC.from_pretrained(args.vae), new_scheduler(), "tiny-sana")
        cfg = ConnectorConfig(planner.hidden_size, bb.dit_dim, bb.caption_channels, use_canvas=False)
        conn = MetaCanvasConnector(cfg)
    else:
        bb = load_backbone(args.base)
        base = load_connector(args.base_connector)
        cfg = ConnectorConfig(planner.hidden_size, bb.dit_dim, bb.caption_channels,
                              canvas_grid=[1, *bb.token_grid(IMAGE_SIZE, IMAGE_SIZE)[1:]],
                              use_canvas=args.stage == "metacanvas",
                              planner_lora=planner_lora(planner, args.planner_lora_rank))
        conn = MetaCanvasConnector(cfg)
        conn.text_connector.load_state_dict(base.connector.text_connector.state_dict())
    bb.transformer.requires_grad_(True)
    conn.requires_grad_(True)
    params = param_groups(bb, conn, args.canvas_lr_scale, args.planner_lora_lr_scale)
    run = ResumableRun(args.run_dir, {"dit": bb.transformer, "connector": conn}, params,
                       lr=args.lr, warmup=200, steps=args.steps, seed=args.seed, cooldown=args.cooldown,
                       ema_decay=args.ema)
    run.run(lambda step, rng: training_step(bb, conn, planner, texts, rng, args.batch, args.text_only_dropout,
                                             args.timestep_sampling, args.text_only_dropout_on))

    recipe = {"stage": args.stage, "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
              "optimizer": "AdamW, 200 warmup, constant, linear cooldown, clip 1.0", "cooldown": args.cooldown,
              "ema": args.ema, "caption_dropout": CAPTION_DROPOUT,
              "text_only_dropout": args.text_only_dropout if cfg.use_canvas else 0.0,
              "text_only_dropout_on": args.text_only_dropout_on if cfg.use_canvas else None,
              "pos_embed": args.pos_embed,
              "timestep_sampling": args.timestep_sampling,
              "canvas_lr_scale": args.canvas_lr_scale if cfg.use_canvas else None,
              "planner_lora_rank": args.planner_lora_rank if cfg.planner_lora else 0,
              "planner_lora_lr_scale": args.planner_lora_lr_scale if cfg.planner_lora else None,
              "wall_time_s": round(run.elapsed), "base": str(args.base) if args.base else None}
    if args.stage == "global":
        save_sana_pipeline_folder(args.out, bb.transformer.eval(), bb.vae, bb.scheduler)
        save_connector(args.out_connector, conn, bb, dit_state=None, recipe=recipe)
    else:
        save_connector(args.out, conn, bb, dit_state=bb.transformer.state_dict(), recipe=recipe)
    print(f"wrote {args.out} after {run.elapsed:.0f} s", flush=True)


if __name__ == "__main__":
    main()

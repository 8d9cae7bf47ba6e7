"""Text-to-video and image-to-video in one task: MetaCanvas on the tiny Wan 2.2 (TI2V) backbone, on clip-world clips.

The stages are t2i's (`global`: a fresh tiny Wan DiT with global conditioning only; `metacanvas`: from that backbone,
add a [keyframes, rows, cols] canvas; `global-continue`: the baseline trains on with the same budget and seed), and
so are the dropouts, noise levels and the text connector's per-sample dropout seeding (inherited from t2i).

Image-to-video as Wan 2.2 TI2V trains it: for a share of the samples (--i2v-share) the first latent frame is given
clean, its tokens at timestep 0, and the loss skips it. The adapter does all of that (`Conditioning(first_frames=)`
into `predict`, `clean_frames` into `canvas_injected`); since a batch call has one number of clean frames, the
samples of each kind go through the DiT as their own group, and every sample weighs the same in the mean.

Images and clips jointly, as Wan 2.2 trains: a share of the samples (--image-share) are shapes-world still images,
one latent frame each (five times cheaper than a clip), so shapes, colours and places are learnt cheaply and the
clips teach motion. Examples come from fixed pools (`world_pool`), so the frozen VAE encodes each once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones import load_backbone
from ...backbones.base import NO_CONDITIONING, Conditioning
from ...canvas_grid import keyframe_seconds
from ...checkpoints import save_connector
from ...connectors import ConnectorConfig, MetaCanvasConnector
from ...injection import canvas_injected
from ...planner import Planner
from ...world import clips, shapes
from ..data import DiskCache
from ..world_pool import FrozenMemo, add_pool_arguments, example_rng, module_fingerprint
from .base import Sample, torch_generator
from .t2i import CAPTION_DROPOUT, STAGES, TEXT_ONLY_DROPOUT, TIMESTEP_SAMPLING, TextStateCache, TextToImage, \
    sample_timestep
from .wan_vae import clip_pixels


def _take(x: torch.Tensor | list[torch.Tensor], idx: list[int]) -> torch.Tensor:
    """Rows `idx` of a batched tensor, or those entries of a list of per-sample tensors stacked."""
    return torch.stack([x[i] for i in idx]) if isinstance(x, list) else x[idx]


class TextToVideo(TextToImage):
    name = "video"

    stages: tuple[str, ...] = STAGES

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--stage", choices=cls.stages, required=True)
        ap.add_argument("--planner", type=Path, required=True, help="Qwen2.5-VL planner folder (stays frozen)")
        ap.add_argument("--base", type=Path, help="Wan pipeline folder to train from (metacanvas, global-continue)")
        ap.add_argument("--base-connector", type=Path, help="MetaCanvas weights whose text connector to start from")
        ap.add_argument("--keyframes", type=int, default=3, help="stage metacanvas: canvas keyframes k")
        ap.add_argument("--canvas-lr-scale", type=float, default=1.0, help="LR multiplier for the new canvas parts")
        ap.add_argument("--text-only-dropout", type=float, default=TEXT_ONLY_DROPOUT,
                        help="stage metacanvas: share of samples whose DiT text is dropped, the canvas kept")
        ap.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default="uniform")
        ap.add_argument("--export-name", help="exported weights' file name (default: by stage)")
        ap.set_defaults(planner_lora_lr_scale=1.0, planner_lora_rank=0, text_only_dropout_on="all", dit_lora_rank=0)
        cls.add_data_arguments(ap)

    @classmethod
    def add_data_arguments(cls, ap: argparse.ArgumentParser) -> None:
        """The flags of what this task draws and where stage global starts."""
        ap.add_argument("--vae", type=Path, help="stage global (tiny world): the trained Wan VAE folder")
        ap.add_argument("--i2v-share", type=float, default=0.5,
                        help="share of clip samples whose first latent frame is given clean (image-to-video)")
        ap.add_argument("--image-share", type=float, default=0.0,
                        help="share of samples that are shapes-world still images (one latent frame each)")
        add_pool_arguments(ap, "clips and images")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if (args.stage == "global") != (args.vae is not None and args.base is None):
            ap.error("--stage global builds a fresh DiT: give --vae only; later stages give --base only")
        if not 0.0 <= args.i2v_share <= 1.0 or not 0.0 <= args.image_share <= 1.0 or args.keyframes < 1:
            ap.error("--i2v-share and --image-share must lie in [0, 1] and --keyframes be at least 1")
        if args.pool < 0:
            ap.error("--pool must be 0 (fresh draws) or a number of examples")
        if not 0.0 <= args.text_only_dropout <= 1.0 - CAPTION_DROPOUT:
            ap.error(f"--text-only-dropout must lie in [0, {1.0 - CAPTION_DROPOUT}]")

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.args, self.device = args, device
        self.planner = Planner.from_pretrained(args.planner, dtype=dtype, device=device)
        self.texts = TextStateCache(self.planner)
        bb = self._backbone(args)
        self.grid = bb.token_grid(clips.SIZE, clips.SIZE, clips.FRAMES)  # (latent frames, rows, cols)
        k = args.keyframes
        cfg = ConnectorConfig(self.planner.hidden_size, bb.dit_dim, bb.caption_channels,
                              canvas_grid=[k, *self.grid[1:]], use_canvas=args.stage == "metacanvas",
                              keyframe_seconds=keyframe_seconds(clips.FRAMES, clips.FPS, k))
        bb.transformer.to(device).requires_grad_(True)
        bb.vae.to(device, dtype).eval().requires_grad_(False)
        self.bb, self.conn = bb, MetaCanvasConnector(cfg).requires_grad_(True)
        if args.base_connector:
            from ...checkpoints import load_connector

            self.conn.text_connector.load_state_dict(load_connector(args.base_connector).connector.text_connector
                                                     .state_dict())
        self.latent_shape = bb.latent_shape(1, clips.SIZE, clips.SIZE, clips.FRAMES)[1:]
        self.image_latent_shape = bb.latent_shape(1, clips.SIZE, clips.SIZE, 1)[1:]
        self._memos(DiskCache(args.cache_dir) if args.cache_dir else None)

    def _memos(self, disk: DiskCache | None) -> None:
        """What frozen models compute from pool examples, kept by example (world_pool)."""
        self.latents = FrozenMemo(f"wan-latents|{module_fingerprint(self.bb.vae)}|{clips.SIZE}", disk)

    def _backbone(self, args: argparse.Namespace):
        """Stage global: a fresh tiny Wan DiT on the trained VAE; later stages: the --base folder."""
        if args.stage != "global":
            return load_backbone(args.base)
        from diffusers import AutoencoderKLWan

        from ...backbones.wan import WanBackbone
        from ...world.tiny_wan import new_wan_dit, new_wan_scheduler

        vae = AutoencoderKLWan.from_pretrained(args.vae)
        return WanBackbone(new_wan_dit(latent_channels=vae.config.z_dim), vae, new_wan_scheduler(), "tiny-wan")

    def _example(self, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, str, str | None]:
        """A clip (F, H, W, 3) or still image (1, H, W, 3), uint8, its caption and its cache key (pool index)."""
        k = int(rng.integers(self.args.pool)) if self.args.pool else None
        ex = rng if k is None else example_rng(f"{kind}-world", k)
        if kind == "image":
            scene = shapes.sample_scene(ex)
            pixels, caption = shapes.render(scene.objects, clips.SIZE, ex)[None], scene.caption
        else:
            scene = clips.sample_clip(ex)
            pixels, caption = clips.render_clip(scene, rng=ex), scene.caption
        return pixels, caption, None if k is None else f"{kind}:{k}"

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        a = self.args
        image = bool(rng.random() < a.image_share)
        pixels, caption, key = self._example(rng, "image" if image else "clip")
        u = rng.random()
        extra = a.text_only_dropout if self.conn.use_canvas else 0.0
        i2v = not image and bool(rng.random() < a.i2v_share)
        t = sample_timestep(rng, a.timestep_sampling)
        gen = torch_generator(rng)
        return Sample({
            "clip": clip_pixels(pixels), "key": key, "kind": "image" if image else "i2v" if i2v else "t2v",
            "start": pixels[0] if i2v else None,
            "canvas_prompt": "" if u < CAPTION_DROPOUT else caption,
            "text_prompt": "" if u < CAPTION_DROPOUT + extra else caption,
            "t": t, "noise": torch.randn(self.image_latent_shape if image else self.latent_shape, generator=gen),
            "dropout_seed": int(torch.randint(2**62, (), generator=gen)),
        })

    def _encoded(self, d: list[dict]) -> list[torch.Tensor]:
        """Each sample's normalised VAE latents (C, F', h, w), from the pool's memo where it was encoded before."""
        out: list[torch.Tensor | None] = [None] * len(d)
        for frames in sorted({x["clip"].shape[1] for x in d}):  # one VAE batch per clip length
            idx = [i for i, x in enumerate(d) if x["clip"].shape[1] == frames]

            def encode(todo: list[int]) -> torch.Tensor:
                with torch.no_grad():
                    return self.bb.encode(torch.stack([d[idx[j]]["clip"] for j in todo]).to(self.device)).float()

            for i, z in zip(idx, self.latents.many([d[i]["key"] for i in idx], encode)):
                out[i] = z.to(self.device)
        return out

    def batch(self, samples: list[Sample]) -> dict:
        d = [s.data for s in samples]
        text_states, text_mask = self.texts([x["text_prompt"] for x in d])
        return {"z": self._encoded(d), "text_states": text_states, "text_mask": text_mask,
                "canvas_prompts": [x["canvas_prompt"] for x in d], "kind": [x["kind"] for x in d],
                "starts": [x["start"] for x in d],
                "t": torch.tensor([x["t"] for x in d], device=self.device),
                "noise": [x["noise"].to(self.device) for x in d],
                "dropout_seeds": [x["dropout_seed"] for x in d]}

    def _group_loss(self, batch: dict, idx: list[int], text: torch.Tensor, kind: str) -> torch.Tensor:
        """Summed per-sample losses of samples `idx`, all of one kind (t2v, i2v with the first frame given, image)."""
        i2v = kind == "i2v"
        cond = Conditioning(first_frames=_take(batch["z"], idx)[:, :, :1]) if i2v else NO_CONDITIONING
        visuals = [[batch["starts"][i]] for i in idx] if i2v else None
        grid = (1, *self.grid[1:]) if kind == "image" else self.grid
        return self._denoise_loss(batch, idx, text, cond, visuals, grid)

    def _denoise_loss(self, batch: dict, idx: list[int], text: torch.Tensor, cond: Conditioning,
                      visuals: list[list] | None, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Summed per-sample flow-matching losses of samples `idx` under `cond` (shared by the samples or one per
        sample), the planner seeing `visuals` before each canvas prompt; the given clean frames are no target."""
        grid = grid or self.grid
        z, noise, t = _take(batch["z"], idx), _take(batch["noise"], idx), batch["t"][idx]
        zt = self.bb.condition((1 - t.view(-1, 1, 1, 1, 1)) * z + t.view(-1, 1, 1, 1, 1) * noise, cond)
        args = (zt, t * 1000, text[idx], batch["text_mask"][idx], cond)
        if self.conn.use_canvas:
            conn = self.conn
            out = self.planner.encode([batch["canvas_prompts"][i] for i in idx], conn.canvas_tokens, conn.config.grid,
                                      conn.canvas_lora, visuals=visuals)
            canvas = conn.canvas_for_grid(conn.canvas_encoder(out.canvas_states.float()), *grid)
            with canvas_injected(self.bb, conn.canvas_fuser, canvas, grid, clean_frames=cond.clean_frames):
                pred = self.bb.predict(*args)
        else:
            pred = self.bb.predict(*args)
        n = cond.clean_frames
        return (pred.float() - (noise - z))[:, :, n:].pow(2).mean(dim=(1, 2, 3, 4)).sum()

    def loss(self, batch: dict) -> torch.Tensor:
        text = self._text(batch["text_states"], batch["dropout_seeds"])
        total = torch.zeros((), device=self.device)
        for kind in ("t2v", "i2v", "image"):
            idx = [i for i, v in enumerate(batch["kind"]) if v == kind]
            if idx:
                total = total + self._group_loss(batch, idx, text, kind)
        return total / len(batch["kind"])

    def recipe(self) -> dict:
        a, canvas = self.args, self.conn.use_canvas
        return {"task": "t2v", "serves": ["t2v", "i2v"], "stage": a.stage, "i2v_share": a.i2v_share,
                "image_share": a.image_share, "pool": a.pool,
                "caption_dropout": CAPTION_DROPOUT, "text_only_dropout": a.text_only_dropout if canvas else 0.0,
                "keyframes": a.keyframes if canvas else None, "canvas_lr_scale": a.canvas_lr_scale if canvas else None,
                "timestep_sampling": a.timestep_sampling,
                "clip": [clips.SIZE, clips.SIZE, clips.FRAMES], "fps": clips.FPS, "data": "clip world",
                "base": str(a.base) if a.base else None}

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        conn = MetaCanvasConnector(self.conn.config)
        conn.load_state_dict(state["connector"])
        name = self.args.export_name or {"global": "global_base_t2v", "metacanvas": "metacanvas_t2v",
                                         "global-continue": "global_t2v"}[self.args.stage]
        path = out / (name if name.endswith(".safetensors") else name + ".safetensors")
        sizes = [[clips.SIZE, clips.SIZE, clips.FRAMES]]
        if self.args.stage != "global":
            save_connector(path, conn, self.bb, dit_state=state["dit"], recipe=recipe, trained_sizes=sizes)
            return [path]
        from ...world.tiny_wan import save_wan_pipeline_folder

        self.bb.transformer.load_state_dict(state["dit"])
        folder = out / "backbone"
        save_wan_pipeline_folder(folder, self.bb.transformer.eval(), self.bb.vae.float(), self.bb.scheduler)
        save_connector(path, conn, self.bb, dit_state=None, recipe=recipe, trained_sizes=sizes)
        return [folder, path]

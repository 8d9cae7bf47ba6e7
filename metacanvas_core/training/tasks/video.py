"""Text-to-video and image-to-video in one task: MetaCanvas on the tiny Wan 2.2 (TI2V) backbone, on clip-world clips.

The stages, dropouts, noise levels, loss and export are every task's (canvas_dit.py); the canvas has `--keyframes`
k keyframes on the latent frames, interpolated to every frame.

Image-to-video as Wan 2.2 TI2V trains it: for a share of the clips (--i2v-share) the first latent frame is given
clean, its tokens at timestep 0, and the loss skips it (the adapter does that: `Conditioning(first_frames=)` into
`predict`, `clean_frames` into `canvas_injected`); the planner sees that start frame before the prompt. Images and
clips jointly, as Wan 2.2 trains: a share of the samples (--image-share) are shapes-world still images, one latent
frame each (five times cheaper than a clip), so shapes, colours and places are learnt cheaply and the clips teach
motion. Samples of each kind go through the DiT as their own group. Examples come from fixed pools (world_pool), so
the frozen VAE encodes each once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones.base import BackboneAdapter, Conditioning
from ...canvas_grid import keyframe_seconds
from ...world import clips, shapes
from ...world.tiny_wan import save_wan_pipeline_folder
from ..world_pool import FrozenMemo, add_pool_arguments, example_rng, module_fingerprint
from .canvas_dit import CanvasDiTTask, Drawn, Source, take
from .wan_vae import clip_pixels


class ClipsAndImages(Source):
    task = "t2v"
    serves = ("t2v", "i2v")
    export_names = {"global": "global_base_t2v", "metacanvas": "metacanvas_t2v", "global-continue": "global_t2v"}
    kinds = ("t2v", "i2v", "image")

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--keyframes", type=int, default=3, help="stage metacanvas: canvas keyframes k")
        ap.add_argument("--i2v-share", type=float, default=0.5,
                        help="share of clip samples whose first latent frame is given clean (image-to-video)")
        ap.add_argument("--image-share", type=float, default=0.0,
                        help="share of samples that are shapes-world still images (one latent frame each)")
        add_pool_arguments(ap, "clips and images")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if not 0.0 <= args.i2v_share <= 1.0 or not 0.0 <= args.image_share <= 1.0 or args.keyframes < 1:
            ap.error("--i2v-share and --image-share must lie in [0, 1] and --keyframes be at least 1")
        if args.pool < 0:
            ap.error("--pool must be 0 (fresh draws) or a number of examples")

    def fresh_backbone(self) -> BackboneAdapter:
        """A fresh tiny Wan DiT on the trained VAE."""
        from diffusers import AutoencoderKLWan

        from ...backbones.wan import WanBackbone
        from ...world.tiny_wan import new_wan_dit, new_wan_scheduler

        vae = AutoencoderKLWan.from_pretrained(self.args.vae)
        return WanBackbone(new_wan_dit(latent_channels=vae.config.z_dim), vae, new_wan_scheduler(), "tiny-wan")

    def bind(self, bb: BackboneAdapter) -> None:
        self.bb = bb
        self.token_grid = bb.token_grid(clips.SIZE, clips.SIZE, clips.FRAMES)  # (latent frames, rows, cols)
        self.latents = FrozenMemo(f"wan-latents|{module_fingerprint(bb.vae)}|{clips.SIZE}", self.disk)

    def canvas(self) -> dict:
        k = self.args.keyframes
        return {"canvas_grid": [k, *self.token_grid[1:]], "keyframe_seconds": keyframe_seconds(clips.FRAMES, clips.FPS, k)}

    def example(self, rng: np.random.Generator, position: int) -> tuple[Drawn, list[str]]:
        """A clip (F, H, W, 3) or still image (1, H, W, 3), uint8, keyed by its pool index."""
        a = self.args
        kind = "image" if rng.random() < a.image_share else "clip"
        k = int(rng.integers(a.pool)) if a.pool else None
        ex = rng if k is None else example_rng(f"{kind}-world", k)
        if kind == "image":
            scene = shapes.sample_scene(ex)
            pixels = shapes.render(scene.objects, clips.SIZE, ex)[None]
        else:
            scene = clips.sample_clip(ex)
            pixels = clips.render_clip(scene, rng=ex)
        return Drawn(pixels, scene.caption, None if k is None else f"{kind}:{k}", extra={"image": kind == "image"}), []

    def kind(self, rng: np.random.Generator, ex: Drawn) -> str:
        if ex.extra["image"]:
            return "image"
        return "i2v" if rng.random() < self.args.i2v_share else "t2v"

    def noise_shape(self, kind: str) -> tuple[int, ...]:
        return self.bb.latent_shape(1, clips.SIZE, clips.SIZE, 1 if kind == "image" else clips.FRAMES)[1:]

    def visuals(self, ex: Drawn, kind: str) -> list:
        return [ex.target[0]] if kind == "i2v" else []  # image-to-video: the planner sees the start frame

    def inputs(self, drawn: list[Drawn], kinds: list[str]) -> dict:
        """Each sample's normalised VAE latents (C, F', h, w), from the pool's memo where it was encoded before."""
        pixels = [clip_pixels(x.target) for x in drawn]
        out: list[torch.Tensor | None] = [None] * len(drawn)
        for frames in sorted({p.shape[1] for p in pixels}):  # one VAE batch per clip length
            idx = [i for i, p in enumerate(pixels) if p.shape[1] == frames]

            def encode(todo: list[int]) -> torch.Tensor:
                with torch.no_grad():
                    return self.bb.encode(torch.stack([pixels[idx[j]] for j in todo]).to(self.device)).float()

            for i, z in zip(idx, self.latents.many([drawn[i].key for i in idx], encode)):
                out[i] = z.to(self.device)
        return {"z": out}

    def conditioning(self, batch: dict, idx: list[int], kind: str) -> Conditioning:
        return Conditioning(first_frames=take(batch["z"], idx)[:, :, :1]) if kind == "i2v" else Conditioning()

    def grid(self, kind: str) -> tuple[int, int, int]:
        return (1, *self.token_grid[1:]) if kind == "image" else self.token_grid

    def recipe(self) -> dict:
        a = self.args
        return {"task": self.task, "serves": list(self.serves), "i2v_share": a.i2v_share, "image_share": a.image_share,
                "pool": a.pool, "keyframes": a.keyframes if a.stage == "metacanvas" else None,
                "clip": [clips.SIZE, clips.SIZE, clips.FRAMES], "fps": clips.FPS, "data": "clip world"}

    def trained_sizes(self) -> list[list[int]]:
        return [[clips.SIZE, clips.SIZE, clips.FRAMES]]

    def save_folder(self, folder: Path, bb: BackboneAdapter) -> None:
        save_wan_pipeline_folder(folder, bb.transformer.eval(), bb.vae.float(), bb.scheduler)


class TextToVideo(CanvasDiTTask):
    name = "video"
    source = ClipsAndImages

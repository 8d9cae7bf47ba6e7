"""Text-to-video and image-to-video in one task: MetaCanvas on the tiny Wan 2.2 (TI2V) backbone, on clip-world clips.

The stages, dropouts, noise levels, loss and export are every task's (canvas_dit.py); the canvas has `--keyframes`
k keyframes on the latent frames, interpolated to every frame.

Image-to-video as Wan 2.2 TI2V trains it: for a share of the clips (--i2v-share) the first latent frame is given
clean, its tokens at timestep 0, and the loss skips it (the adapter does that: `Conditioning(first_frames=)` into
`predict`, `clean_frames` into `canvas_injected`); the planner sees that start frame before the prompt. Images and
clips jointly, as Wan 2.2 trains: a share of the samples (--image-share) are shapes-world still images, one latent
frame each (five times cheaper than a clip), so shapes, colours and places are learnt cheaply and the clips teach
motion. Samples of each kind go through the DiT as their own group. Examples come from fixed pools (world_pool), so
the frozen VAE encodes each once; or from a user's clips (`--data`, datasets.py: metadata.jsonl or tar shards with a
video member, decoded to --resolution, --frames at --fps) and images (`--image-data`), their latents kept under
--cache-dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones.base import BackboneAdapter, Conditioning
from ...canvas_grid import keyframe_seconds
from ...world import clips, shapes
from ...world.tiny_wan import WAN_HEADS, save_wan_pipeline_folder
from ..data import DataStream
from ..datasets import Sizes, TaskDataset
from ..world_pool import FrozenMemo, add_pool_arguments, example_rng, module_fingerprint
from .canvas_dit import CanvasDiTTask, Drawn, Source, take
from .wan_vae import check_wan_vae_folder, clip_pixels


def add_data_arguments(ap: argparse.ArgumentParser, what: str) -> None:
    """--data and the sizes its clips decode to (the clip world's by default)."""
    ap.add_argument("--data", type=Path, help=what)
    ap.add_argument("--resolution", type=int, default=clips.SIZE, help="training size (square), pixels")
    ap.add_argument("--frames", type=int, default=clips.FRAMES, help="frames per clip (4k+1)")
    ap.add_argument("--fps", type=float, default=clips.FPS, help="clips are resampled to this frame rate")


def check_sizes(ap: argparse.ArgumentParser, args: argparse.Namespace, data_given: bool) -> None:
    world = (clips.SIZE, clips.FRAMES, clips.FPS)
    if not data_given and (args.resolution, args.frames, args.fps) != world:
        ap.error(f"the clip world is {clips.SIZE}x{clips.SIZE}, {clips.FRAMES} frames at {clips.FPS:g} fps: give "
                 "--data for other --resolution, --frames or --fps")
    if args.frames < 1 or (args.frames - 1) % 4 or args.fps <= 0 or args.resolution < 1:
        ap.error("--frames must be 4k+1 (as Wan's VAE keeps the first frame and compresses every 4 after it), "
                 "--fps and --resolution positive")


class ClipsAndImages(Source):
    task = "t2v"
    serves = ("t2v", "i2v")
    export_names = {"global": "global_base_t2v", "metacanvas": "metacanvas_t2v", "global-continue": "global_t2v"}
    kinds = ("t2v", "i2v", "image")

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--keyframes", type=int, default=3, help="stage metacanvas: canvas keyframes k")
        ap.add_argument("--dit-heads", type=int, default=WAN_HEADS,
                        help="stage global from --vae: the fresh DiT's width in heads of 64")
        ap.add_argument("--i2v-share", type=float, default=0.5,
                        help="share of clip samples whose first latent frame is given clean (image-to-video)")
        ap.add_argument("--image-share", type=float, default=0.0,
                        help="share of samples that are still images (one latent frame each): the shapes world's, "
                             "or --image-data's")
        add_data_arguments(ap, "clips: a folder with metadata.jsonl ({\"file_name\": clip, \"text\": ...}) or tar "
                               "shards with a video member (default: the clip world)")
        ap.add_argument("--image-data", type=Path,
                        help="with --data: the still images of --image-share (the text-to-image layout)")
        add_pool_arguments(ap, "clips and images")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if not 0.0 <= args.i2v_share <= 1.0 or not 0.0 <= args.image_share <= 1.0 or args.keyframes < 1:
            ap.error("--i2v-share and --image-share must lie in [0, 1] and --keyframes be at least 1")
        if args.pool < 0:
            ap.error("--pool must be 0 (fresh draws) or a number of examples")
        if args.dit_heads != WAN_HEADS and (args.stage != "global" or args.vae is None):
            ap.error("--dit-heads only applies to --stage global with --vae (a fresh DiT); other runs keep the --base "
                     "DiT")
        if args.dit_heads < 1:
            ap.error("--dit-heads must be at least 1")
        if args.vae is not None:
            check_wan_vae_folder(ap, "--vae", args.vae)
        check_sizes(ap, args, args.data is not None)
        if args.image_data is not None and args.data is None:
            ap.error("--image-data goes with --data (the clip world has its own images)")
        if args.data is not None and args.image_share and args.image_data is None:
            ap.error("--image-share with --data needs --image-data (a folder or shards of captioned images)")

    def __init__(self, args: argparse.Namespace, device: torch.device, disk) -> None:
        super().__init__(args, device, disk)
        self.size, self.frames, self.fps = args.resolution, args.frames, args.fps
        self.streams = {}
        if args.data is not None:
            sizes = Sizes(self.size, self.frames, self.fps)
            self.streams["clip"] = DataStream(TaskDataset(args.data, "t2v", sizes), args.seed, args.strict)
            if args.image_data is not None:
                self.streams["image"] = DataStream(TaskDataset(args.image_data, "t2i", sizes), args.seed, args.strict)

    def fresh_backbone(self) -> BackboneAdapter:
        """A fresh tiny Wan DiT on the trained VAE."""
        from diffusers import AutoencoderKLWan

        from ...backbones.wan import WanBackbone
        from ...world.tiny_wan import new_wan_dit, new_wan_scheduler

        vae = AutoencoderKLWan.from_pretrained(self.args.vae)
        dit = new_wan_dit(heads=self.args.dit_heads, latent_channels=vae.config.z_dim)
        return WanBackbone(dit, vae, new_wan_scheduler(), "tiny-wan")

    def bind(self, bb: BackboneAdapter) -> None:
        self.bb = bb
        self.token_grid = bb.token_grid(self.size, self.size, self.frames)  # (latent frames, rows, cols)
        self.latents = FrozenMemo(f"wan-latents|{module_fingerprint(bb.vae)}|{self.size}{self._data_id()}", self.disk)

    def _data_id(self) -> str:
        """What the cached latents' keys are indices into, besides the VAE and size (nothing extra for the world)."""
        a = self.args
        return f"|{a.data}|{a.image_data}|{self.frames}|{self.fps:g}" if self.streams else ""

    def canvas(self) -> dict:
        k = self.args.keyframes
        return {"canvas_grid": [k, *self.token_grid[1:]], "keyframe_seconds": keyframe_seconds(self.frames, self.fps, k)}

    def example(self, rng: np.random.Generator, position: int) -> tuple[Drawn, list[str]]:
        """A clip (F, H, W, 3) or still image (1, H, W, 3), uint8, keyed by its pool or dataset index."""
        a = self.args
        kind = "image" if rng.random() < a.image_share else "clip"
        if self.streams:
            rec, skipped = self.streams[kind][position]
            pixels = rec.media["file_name"]
            return Drawn(pixels if kind == "clip" else pixels[None], rec.text, f"data-{kind}:{rec.key}",
                         extra={"image": kind == "image"}), skipped
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
        return self.bb.latent_shape(1, self.size, self.size, 1 if kind == "image" else self.frames)[1:]

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
                "clip": [self.size, self.size, self.frames], "fps": self.fps,
                "data": str(a.data) if a.data else "clip world",
                **({"image_data": str(a.image_data)} if a.image_data else {})}

    def trained_sizes(self) -> list[list[int]]:
        return [[self.size, self.size, self.frames]]

    def save_folder(self, folder: Path, bb: BackboneAdapter) -> None:
        save_wan_pipeline_folder(folder, bb.transformer.eval(), bb.vae.float(), bb.scheduler)


class TextToVideo(CanvasDiTTask):
    name = "video"
    source = ClipsAndImages

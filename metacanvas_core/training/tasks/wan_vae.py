"""Tiny world: train the tiny Wan 2.2 VAE (`AutoencoderKLWan`, 4x space, 4x time) on clip-world clips.

L1 + L2 reconstruction of the posterior's mode (before the decoder's output clamp), plus a tiny KL weight that keeps
the posterior's means from drifting to large values. The export measures per-channel latents_mean / latents_std on
sample clips and writes them into the config: the Wan pipelines (and backbones/wan.py) normalise latents with them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ...world import clips, shapes
from ...world.tiny_wan import WAN_LATENT_CHANNELS, WAN_VAE_SPATIAL, new_wan_vae
from .base import Sample, Task

STATS_CLIPS = 64  # clips the exported latent statistics are measured on (a fixed generator, not training draws)


def clip_pixels(clip: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (3, F, H, W) in [-1, 1], the layout video VAEs encode."""
    return torch.from_numpy(shapes.model_pixels(clip)).transpose(0, 1).contiguous()


def check_wan_vae_folder(ap: argparse.ArgumentParser, flag: str, folder: Path) -> dict:
    """The config of the trained Wan VAE folder given to `flag`, or an error naming the flag and the fix."""
    config = folder / "config.json"
    if not config.is_file():
        ap.error(f"{flag} {folder}: no config.json there; give a Wan VAE folder (e.g. "
                 "metacanvas_core/assets/tiny/wan_vae)")
    cfg = json.loads(config.read_text())
    if cfg.get("_class_name") != "AutoencoderKLWan":
        ap.error(f"{flag} {folder}: holds a {cfg.get('_class_name')}, not an AutoencoderKLWan")
    if not (folder / "diffusion_pytorch_model.safetensors").is_file():
        ap.error(f"{flag} {folder}: config.json but no diffusion_pytorch_model.safetensors (a single-file save, as "
                 "`vae-wan` and the shipped wan_vae write it)")
    return cfg


class WanVaePretraining(Task):
    name = "vae-wan"

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--base-dim", type=int, default=16, help="VAE width (channels of its first level)")
        ap.add_argument("--frames", type=int, default=9,
                        help="train on windows of this many consecutive frames (4k+1, at least 9): the VAE is causal "
                             "and encodes a clip chunk by chunk, each chunk reading a cache of the one before, so the "
                             "window must hold two 4-frame chunks after the first frame for later chunks to be "
                             "trained at all (5-frame windows drifted in colour from frame 5 on); 9 frames is half "
                             "the cost of a full 17-frame clip")
        ap.add_argument("--crop", type=int, default=clips.SIZE,
                        help=f"train on random square crops of this size (a multiple of {WAN_VAE_SPATIAL}, the VAE's "
                             "compression; convolutions see the same local content, 4x cheaper at half the size)")
        ap.add_argument("--latent-channels", type=int, default=WAN_LATENT_CHANNELS,
                        help="the VAE's z_dim (Wan 2.1: 16, Wan 2.2: 48)")
        ap.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the posterior's KL term")
        ap.add_argument("--init", type=Path,
                        help="a trained Wan VAE folder to fine-tune (e.g. on longer windows) instead of a fresh one; "
                             "its width and latent channels replace --base-dim and --latent-channels")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.frames < 9 or (args.frames - 1) % 4 or args.frames > clips.FRAMES:
            ap.error(f"--frames must be 4k+1 in [9, {clips.FRAMES}] (shorter windows never train the chunks that "
                     "read a real previous chunk)")
        s = WAN_VAE_SPATIAL
        if args.crop < s or args.crop % s or args.crop > clips.SIZE:
            ap.error(f"--crop must be a multiple of {s} in [{s}, {clips.SIZE}]")
        if args.init is not None:
            cfg = check_wan_vae_folder(ap, "--init", args.init)
            args.base_dim, args.latent_channels = cfg["base_dim"], cfg["z_dim"]

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.args, self.device = args, device
        self.vae = new_wan_vae(args.base_dim, args.latent_channels)
        if args.init is not None:  # its measured latent statistics are measured again at export
            self.vae.load_state_dict(load_file(args.init / "diffusion_pytorch_model.safetensors"))
        self.vae.to(device)

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.vae.parameters())}]

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        clip = clips.render_clip(clips.sample_clip(rng), rng=rng)
        a = self.args
        start = int(rng.integers(len(clip) - a.frames + 1))
        s = WAN_VAE_SPATIAL
        y, x = s * rng.integers((clips.SIZE - a.crop) // s + 1, size=2)  # crops on the latent grid
        return Sample({"clip": clip_pixels(clip[start: start + a.frames, y: y + a.crop, x: x + a.crop])})

    def batch(self, samples: list[Sample]) -> dict:
        return {"x": torch.stack([s.data["clip"] for s in samples]).to(self.device)}

    def loss(self, batch: dict) -> torch.Tensor:
        x = batch["x"]
        post = self.vae.encode(x).latent_dist
        rec = self._unclamped_decode(post.mode()).float()
        return (rec - x).abs().mean() + (rec - x).pow(2).mean() + self.args.kl_weight * post.kl().mean()

    def _unclamped_decode(self, z: torch.Tensor) -> torch.Tensor:
        """`decode` clamps its output to [-1, 1], which passes no gradient where it clips: a decoder that
        overshoots everywhere (the background is -1) stops learning. So the loss reads the decoder's own outputs
        (a hook catches each frame chunk) before that clamp."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        chunks: list[torch.Tensor] = []
        hook = self.vae.decoder.register_forward_hook(lambda module, args, out: chunks.append(out))
        try:
            self.vae.decode(z)
        finally:
            hook.remove()
        out, p = torch.cat(chunks, 2), self.vae.config.patch_size
        return unpatchify(out, patch_size=p) if p else out

    def recipe(self) -> dict:
        return {"task": "vae-wan", "base_dim": self.args.base_dim, "latent_channels": self.args.latent_channels, "kl_weight": self.args.kl_weight,
                "frames": self.args.frames, "crop": self.args.crop,
                "init": str(self.args.init) if self.args.init else None,
                "clip": [clips.SIZE, clips.SIZE, clips.FRAMES]}

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        vae = new_wan_vae(self.args.base_dim, self.args.latent_channels)
        vae.load_state_dict(state["vae"])
        rng = np.random.default_rng(99)
        x = torch.stack([clip_pixels(clips.render_clip(clips.sample_clip(rng), rng=rng)) for _ in range(STATS_CLIPS)])
        with torch.no_grad():
            z = torch.cat([vae.encode(c).latent_dist.mode() for c in x.split(8)])  # B, C, F, h, w
        mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
        vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean],
                               latents_std=[round(float(v), 5) for v in std.clamp_min(1e-3)])
        vae.save_pretrained(out / "vae")
        return [out / "vae"]

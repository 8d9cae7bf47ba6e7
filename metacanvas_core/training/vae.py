"""Train the tiny DC-AE (`AutoencoderDC`, f4, 16 channels) on shapes-world images; set its scaling factor so
latents have unit variance, as SANA's VAE config does for its own."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..world import shapes
from ..world.tiny_models import IMAGE_SIZE, new_vae
from .loop import ResumableRun


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the tiny shapes-world autoencoder (AutoencoderDC).")
    ap.add_argument("--out", type=Path, required=True, help="folder for the trained VAE (diffusers layout)")
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    vae = new_vae()

    def step(_: int, rng) -> dict:
        x = torch.from_numpy(shapes.sample_batch(rng, args.batch, IMAGE_SIZE)[0])
        z = vae.encode(x).latent
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        return {"loss": loss, "latent_std": z.detach().std()}

    run = ResumableRun(args.run_dir, {"vae": vae}, list(vae.parameters()), lr=args.lr, warmup=100,
                       steps=args.steps, seed=args.seed)
    run.run(step)
    with torch.no_grad():
        x = torch.from_numpy(shapes.sample_batch(np.random.default_rng(99), 256)[0])
        std = vae.encode(x).latent.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    vae.save_pretrained(args.out)
    print(f"vae written to {args.out}; latent std {std:.4f}, {run.elapsed:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""Side by side, in one run: the native route (ComfyUI's own Wan model + Apply MetaCanvas to MODEL, ComfyUI's sampler)
against the pack's route (Load MetaCanvas Backbone + Inject into Backbone, the pack's sampling loop) on the same
built-in tiny text-to-video model, weights, plan, noise, sigmas and sampler (Euler). Each route runs in a fresh
process, so its peak resident memory (ru_maxrss) is its own.

usage: python scripts/bench_native_route.py --comfyui /path/to/ComfyUI [--steps 20] [--repeats 3]
(run from a Python with ComfyUI's requirements; see ../shared/comfyui-harness)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]


def child(route: str, steps: int, repeats: int) -> dict:
    plain = route.endswith("-plain")  # the same DiT without the canvas: what the canvas costs on each route
    route = route.removesuffix("-plain")
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(PACK))
    sys.path.insert(0, str(PACK / "tests"))
    from metacanvas_core.backbones import load_backbone
    from metacanvas_core.builtin import ASSETS
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan
    from metacanvas_core.planner import Planner
    from metacanvas_core.sampling import InjectedBackbone, initial_noise, sample
    from metacanvas_core.schedulers import make_scheduler

    weights = load_connector(ASSETS / "metacanvas_t2v.safetensors")
    plan = make_plan(Planner.from_pretrained(ASSETS / "planner"), weights, ["a red circle moves from left to right"],
                     with_unconditional=True)
    scheduler_of = load_backbone(ASSETS / "wan_t2v") if route == "pack" else None
    if route == "pack":
        model = InjectedBackbone(scheduler_of).inject(weights, 0.0 if plain else 1.0)

        def run():
            return sample(model, plan, width=32, height=32, frames=17, steps=steps, cfg=3.0, seed=0,
                          scheduler=make_scheduler(scheduler_of.scheduler, "euler", shift=5.0))
    else:
        from comfyui_env import comfyui_or_skip  # (imports ComfyUI from $METACANVAS_COMFYUI)

        comfy = comfyui_or_skip()
        import comfy.sample
        import comfy.samplers
        from diffusers import FlowMatchEulerDiscreteScheduler

        from nodes.native import MetaCanvasApplyToModel, MetaCanvasNativeBackboneLoader, MetaCanvasPlanToConditioning

        base, vae = MetaCanvasNativeBackboneLoader().load("built-in tiny: wan_t2v", "built-in tiny: metacanvas_t2v")
        patched = base if plain else MetaCanvasApplyToModel().apply(base, weights, 1.0)[0]
        pos, neg = MetaCanvasPlanToConditioning().convert(weights, plan)
        s = FlowMatchEulerDiscreteScheduler(shift=5.0)
        s.set_timesteps(steps)
        latent = torch.zeros(1, 16, 5, 8, 8)

        def run():
            return comfy.sample.sample_custom(patched, initial_noise(tuple(latent.shape), 0), 3.0,
                                              comfy.samplers.ksampler("euler"), s.sigmas.float(), pos, neg, latent,
                                              seed=0, disable_pbar=True)
    run()  # warm-up (first calls allocate)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"route": route + ("-plain" if plain else ""), "steps": steps, "best_s": min(times), "times_s": times,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=False, help="ComfyUI checkout (default: $METACANVAS_COMFYUI)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["pack", "native", "pack-plain", "native-plain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.repeats)))
        return
    env = {**os.environ, "METACANVAS_COMFYUI": args.comfyui or os.environ.get("METACANVAS_COMFYUI", "")}
    rows = []
    for route in ("pack", "native", "pack-plain", "native-plain"):
        out = subprocess.run([sys.executable, __file__, "--child", route, "--steps", str(args.steps), "--repeats",
                              str(args.repeats)], env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| route | sampling time, 17x32x32 clip, %d steps, cfg 3 (best of %d) | peak resident memory |"
          % (args.steps, args.repeats))
    print("|---|---|---|")
    for r in rows:
        name = {"pack": "pack route (Sample Video's loop), MetaCanvas",
                "native": "native route (ComfyUI's sampler + Apply MetaCanvas to MODEL)",
                "pack-plain": "pack route, same DiT, canvas off (strength 0)",
                "native-plain": "native route, same DiT, no Apply MetaCanvas"}[r["route"]]
        print(f"| {name} | {r['best_s']:.2f} s | {r['peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()

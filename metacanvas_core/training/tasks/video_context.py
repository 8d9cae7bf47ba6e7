"""Video editing and in-context video in one task: one set of widened Wan weights serves both.

Trained on top of the text-to-video backbone, as the paper does: both stages start from the t2v global Wan folder
(--base) and its text connector (--base-connector), and the DiT is widened for context at the start
(`widened_for_context`: zero-initialised mask and conditioning input channels, so at step 0 it computes exactly what
the t2v backbone did). `metacanvas` adds a fresh keyframe canvas; `global-continue` trains on without one, with the
same budget, data and seed. Everything else (dropouts, noise levels, the canvas, the seeded text connector, the loss)
is the text-to-video task's.

Each sample is an edit (--in-context-share: or a reference-to-video scene) from the clip edits world's training
split. What the planner sees and what the DiT is conditioned on come from `video_tasks`, exactly as at sampling: the
source clip as a `Video` or the reference images (downscaled to the planner's trained size), and their latents + mask
in the DiT's conditioning channels. A dropped caption drops the planner's view too (CFG's unconditional plan is the
empty prompt without visuals) but keeps the conditioning latents, which sampling gives both CFG branches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones import load_backbone
from ...backbones.base import Conditioning
from ...backbones.wan import widened_for_context
from ...checkpoints import save_connector
from ...connectors import MetaCanvasConnector
from ...errors import MetaCanvasError
from ...video_tasks import IN_CONTEXT, VIDEO_EDIT, clip_visual, in_context_inputs, planner_visual, video_edit_inputs
from ...world import clips
from ...world.clip_edits import (
    MAX_REFERENCES, render_clip_edit, render_references, sample_clip_edit, sample_reference_scene,
)
from ...world.tiny_wan import save_wan_pipeline_folder
from ..world_pool import FrozenMemo, add_pool_arguments, example_rng, module_fingerprint
from .base import Sample, torch_generator
from .edit import padded, seen_text_states
from .t2i import CAPTION_DROPOUT, sample_timestep
from .video import TextToVideo
from .wan_vae import clip_pixels

VIDEO_CONTEXT_TASK = "video-context"  # the recipe's task; `serves` lists what the weights generate
EXPORT_NAMES = {"metacanvas": "metacanvas_video_context", "global-continue": "global_video_context"}


def _float_image(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float in [0, 1], as nodes and the CLI hand images to `video_tasks`."""
    return torch.from_numpy(pixels).float().div(255)


class VideoContext(TextToVideo):
    name = VIDEO_CONTEXT_TASK
    stages = ("metacanvas", "global-continue")

    @classmethod
    def add_data_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--in-context-share", type=float, default=0.5,
                        help="share of samples that are reference-to-video scenes (the rest are clip edits)")
        add_pool_arguments(ap, "clip edits and reference scenes")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.base is None or args.base_connector is None:
            ap.error("video-context trains on top of the text-to-video backbone: give --base (its global Wan folder) "
                     "and --base-connector (its global weights)")
        if not 0.0 <= args.in_context_share <= 1.0 or args.keyframes < 1:
            ap.error("--in-context-share must lie in [0, 1] and --keyframes be at least 1")
        if not 0.0 <= args.text_only_dropout <= 1.0 - CAPTION_DROPOUT:
            ap.error(f"--text-only-dropout must lie in [0, {1.0 - CAPTION_DROPOUT}]")

    def _backbone(self, args: argparse.Namespace):
        bb = load_backbone(args.base)
        if bb.architecture != "wan" or bb.mask_channels:
            raise MetaCanvasError(f"--base {args.base}: give the text-to-video Wan folder (a {bb.architecture} "
                                  "backbone whose DiT takes only the noisy latents); it is widened here")
        bb.transformer = widened_for_context(bb.transformer).eval()
        return bb

    def _memos(self, disk) -> None:
        super()._memos(disk)
        self.texts_seen = FrozenMemo(f"planner-seen|{module_fingerprint(self.planner.model)}", disk)

    def sample(self, rng: np.random.Generator, step: int, index: int) -> Sample:
        a = self.args
        in_context = bool(rng.random() < a.in_context_share)
        world = "reference-world" if in_context else "clip-edit-world"
        k = int(rng.integers(a.pool)) if a.pool else None
        ex = rng if k is None else example_rng(world, k)
        if in_context:
            scene = sample_reference_scene(ex, split="train")
            refs = render_references(scene, ex)
            target, source, prompt = clips.render_clip(scene.scene, rng=ex), None, scene.prompt
        else:
            edit = sample_clip_edit(ex, split="train")
            (source, target), refs, prompt = render_clip_edit(edit, rng=ex), None, edit.instruction
        u = rng.random()
        extra = a.text_only_dropout if self.conn.use_canvas else 0.0
        t = sample_timestep(rng, a.timestep_sampling)
        gen = torch_generator(rng)
        text_prompt = "" if u < CAPTION_DROPOUT + extra else prompt
        key = None if k is None else f"{world}:{k}"
        return Sample({
            "clip": clip_pixels(target), "source": source, "references": refs,
            "key": key, "text_key": None if key is None or not text_prompt else f"{key}:{text_prompt}",
            "canvas_prompt": "" if u < CAPTION_DROPOUT else prompt,
            "text_prompt": text_prompt,
            "t": t, "noise": torch.randn(self.latent_shape, generator=gen),
            "dropout_seed": int(torch.randint(2**62, (), generator=gen)),
        })

    def _inputs(self, x: dict):
        """`video_tasks`' planner visuals and DiT conditioning of one sample."""
        if x["references"] is None:
            return video_edit_inputs(self.bb, _float_image(x["source"]), clips.FPS, "training clip")
        refs = [_float_image(r) for r in x["references"]]
        return in_context_inputs(self.bb, refs, clips.SIZE, clips.SIZE, clips.FRAMES, "training references",
                                 MAX_REFERENCES)

    def _visuals(self, x: dict) -> list:
        """What the planner sees before the prompt (as `video_tasks` gives it at sampling): the source clip as a
        `Video`, or the reference images."""
        if x["references"] is None:
            return [clip_visual(_float_image(x["source"]), clips.FPS, "training clip")]
        return list(planner_visual(_float_image(np.stack(x["references"]))))

    def batch(self, samples: list[Sample]) -> dict:
        d = [s.data for s in samples]
        key = lambda x, what: None if x["key"] is None else f"{x['key']}:{what}"  # noqa: E731

        def conditioning(todo: list[int]) -> list[torch.Tensor]:  # context latents and mask, one tensor per sample
            out = []
            for i in todo:
                c = self._inputs(d[i]).conditioning
                out.append(torch.cat([c.context, c.context_mask], 1)[0].float())
            return out

        def targets(todo: list[int]) -> torch.Tensor:
            with torch.no_grad():
                return self.bb.encode(torch.stack([d[i]["clip"] for i in todo]).to(self.device)).float()

        cond = torch.stack(self.latents.many([key(x, "condition") for x in d], conditioning)).to(self.device)
        z = torch.stack(self.latents.many([key(x, "target") for x in d], targets)).to(self.device)
        visuals = [self._visuals(x) for x in d]
        seen = lambda k: [v if x[k] else [] for x, v in zip(d, visuals)]  # noqa: E731
        prompts, text_visuals = [x["text_prompt"] for x in d], seen("text_prompt")

        def text(todo: list[int]) -> list[torch.Tensor]:
            states, mask = seen_text_states(self.planner, [prompts[i] for i in todo], [text_visuals[i] for i in todo])
            return [s[: int(m.sum())] for s, m in zip(states, mask)]

        text_states, text_mask = padded(self.texts_seen.many([x["text_key"] for x in d], text), self.planner.hidden_size,
                                        self.device)
        c = z.shape[1]
        return {"z": z, "text_states": text_states, "text_mask": text_mask,
                "context": cond[:, :c], "context_mask": cond[:, c:],
                "canvas_prompts": [x["canvas_prompt"] for x in d], "canvas_visuals": seen("canvas_prompt"),
                "t": torch.tensor([x["t"] for x in d], device=self.device),
                "noise": torch.stack([x["noise"] for x in d]).to(self.device),
                "dropout_seeds": [x["dropout_seed"] for x in d]}

    def loss(self, batch: dict) -> torch.Tensor:
        text = self._text(batch["text_states"], batch["dropout_seeds"])
        cond = Conditioning(context=batch["context"], context_mask=batch["context_mask"])
        everyone = list(range(len(batch["dropout_seeds"])))
        return self._denoise_loss(batch, everyone, text, cond, batch["canvas_visuals"]) / len(everyone)

    def recipe(self) -> dict:
        a, canvas = self.args, self.conn.use_canvas
        return {"task": VIDEO_CONTEXT_TASK, "serves": [VIDEO_EDIT, IN_CONTEXT], "max_references": MAX_REFERENCES,
                "stage": a.stage, "in_context_share": a.in_context_share, "caption_dropout": CAPTION_DROPOUT,
                "text_only_dropout": a.text_only_dropout if canvas else 0.0,
                "keyframes": a.keyframes if canvas else None, "canvas_lr_scale": a.canvas_lr_scale if canvas else None,
                "timestep_sampling": a.timestep_sampling,
                "mask_channels": self.bb.mask_channels, "clip": [clips.SIZE, clips.SIZE, clips.FRAMES], "pool": a.pool,
                "fps": clips.FPS, "data": "clip edits + reference scenes (training split)", "base": str(a.base)}

    def export(self, state: dict, out: Path, recipe: dict) -> list[Path]:
        """The widened Wan folder (trained DiT; the base's VAE and scheduler) and the weights, which carry the DiT
        too (as t2v's do), so both methods' weights run on one shipped folder."""
        conn = MetaCanvasConnector(self.conn.config)
        conn.load_state_dict(state["connector"])
        name = self.args.export_name or EXPORT_NAMES[self.args.stage]
        path = out / (name if name.endswith(".safetensors") else name + ".safetensors")
        self.bb.transformer.load_state_dict(state["dit"])
        folder = out / "backbone"
        save_wan_pipeline_folder(folder, self.bb.transformer.eval(), self.bb.vae.float(), self.bb.scheduler)
        save_connector(path, conn, self.bb, dit_state=state["dit"], recipe=recipe,
                       trained_sizes=[[clips.SIZE, clips.SIZE, clips.FRAMES]])
        return [folder, path]

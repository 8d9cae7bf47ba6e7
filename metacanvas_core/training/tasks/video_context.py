"""Video editing and in-context video in one task: one set of widened Wan weights serves both.

Trained on top of the text-to-video backbone, as the paper does: both stages start from the t2v global Wan folder
(--base) and its text connector (--base-connector), and the DiT is widened for context at the start
(`widened_for_context`: zero-initialised mask and conditioning input channels, so at step 0 it computes exactly what
the t2v backbone did). `metacanvas` adds a fresh keyframe canvas; `global-continue` trains on without one, with the
same budget, data and seed. Everything else (dropouts, noise levels, the canvas, the seeded text connector, the loss)
is every task's (canvas_dit.py).

Each sample is an edit (--in-context-share: or a reference-to-video scene) from the clip edits world's training
split, from fixed pools (world_pool: each example's conditioning, target latents and planner states are computed
once). What the planner sees and what the DiT is conditioned on come from `video_tasks`, exactly as at sampling: the
source clip as a `Video` or the reference images, and their latents + mask in the DiT's conditioning channels. A dropped caption drops the planner's view too (CFG's unconditional plan is the
empty prompt without visuals) but keeps the conditioning latents, which sampling gives both CFG branches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ...backbones.base import BackboneAdapter, Conditioning
from ...backbones.wan import widened_for_context
from ...errors import MetaCanvasError
from ...video_tasks import IN_CONTEXT, VIDEO_EDIT, clip_visual, in_context_inputs, planner_visual, video_edit_inputs
from ...world import clips
from ...world.clip_edits import (
    MAX_REFERENCES, render_clip_edit, render_references, sample_clip_edit, sample_reference_scene,
)
from ..data import DataStream
from ..datasets import Sizes, TaskDataset
from ..world_pool import add_pool_arguments, example_rng
from .canvas_dit import CanvasDiTTask, Drawn, Source, take
from .video import ClipsAndImages, add_data_arguments, check_sizes
from .wan_vae import clip_pixels

VIDEO_CONTEXT_TASK = "video-context"  # the recipe's task; `serves` lists what the weights generate


def _float_image(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float in [0, 1], as nodes and the CLI hand images to `video_tasks`."""
    return torch.from_numpy(pixels).float().div(255)


class ClipContexts(ClipsAndImages):
    """Clip edits and reference scenes on the widened Wan: the text-to-video source's backbone, canvas and sizes,
    its own examples and conditioning."""

    task = VIDEO_CONTEXT_TASK
    serves = (VIDEO_EDIT, IN_CONTEXT)
    stages = ("metacanvas", "global-continue")
    export_names = {"metacanvas": "metacanvas_video_context", "global-continue": "global_video_context"}
    kinds = ("context",)
    text_sees_visuals = True
    exports_folder = True  # the widened Wan folder, so both methods' weights run on one shipped folder

    @classmethod
    def add_arguments(cls, ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--keyframes", type=int, default=3, help="stage metacanvas: canvas keyframes k")
        ap.add_argument("--in-context-share", type=float, default=0.5,
                        help="share of samples that are reference-to-video scenes (the rest are clip edits)")
        add_data_arguments(ap, "clip edits: a folder with metadata.jsonl ({\"source\": clip, \"target\": clip, "
                               "\"instruction\": ...}) or tar shards (default: the clip edits world)")
        ap.add_argument("--reference-data", type=Path,
                        help="reference sets: metadata.jsonl ({\"references\": [images], \"file_name\": clip, "
                             "\"text\": ...}) or tar shards (default: the reference world)")
        add_pool_arguments(ap, "clip edits and reference scenes")

    @classmethod
    def check_arguments(cls, ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.base_connector is None:
            ap.error("video-context trains on top of the text-to-video backbone: give --base (its global Wan folder) "
                     "and --base-connector (its global weights)")
        if not 0.0 <= args.in_context_share <= 1.0 or args.keyframes < 1:
            ap.error("--in-context-share must lie in [0, 1] and --keyframes be at least 1")
        if args.pool < 0:
            ap.error("--pool must be 0 (fresh draws) or a number of examples")
        if args.dit_lora_rank:
            ap.error("--dit-lora-rank: video-context trains the widened patch embedding's new input channels in "
                     "full, which a LoRA of the DiT's attention and MLP layers cannot; train the DiT in full")
        check_sizes(ap, args, args.data is not None or args.reference_data is not None)
        if (args.data is None) != (args.reference_data is None):
            only = 0.0 if args.reference_data is None else 1.0
            if args.in_context_share != only:
                ap.error(f"with only {'--data' if only == 0.0 else '--reference-data'} there is one kind of sample: "
                         f"give --in-context-share {only:g}, or both --data and --reference-data")

    def __init__(self, args: argparse.Namespace, device: torch.device, disk) -> None:
        Source.__init__(self, args, device, disk)
        self.size, self.frames, self.fps = args.resolution, args.frames, args.fps
        sizes, self.streams = Sizes(self.size, self.frames, self.fps), {}
        for kind, data, layout in (("edit", args.data, VIDEO_EDIT), ("reference", args.reference_data, IN_CONTEXT)):
            if data is not None:
                self.streams[kind] = DataStream(TaskDataset(data, layout, sizes), args.seed, args.strict)
        # The world's scenes have at most MAX_REFERENCES; a clip holds one per latent frame (video_tasks).
        self.max_references = (self.frames - 1) // 4 + 1 if args.reference_data is not None else MAX_REFERENCES

    def _data_id(self) -> str:
        a = self.args
        return f"|{a.data}|{a.reference_data}|{self.frames}|{self.fps:g}" if self.streams else ""

    def fresh_backbone(self) -> BackboneAdapter:
        raise MetaCanvasError("video-context has no global stage: it trains on top of the text-to-video backbone")

    def from_base(self, bb: BackboneAdapter) -> BackboneAdapter:
        if "context" not in bb.conditioning_parts or bb.mask_channels:
            raise MetaCanvasError(f"--base {self.args.base}: give the text-to-video Wan folder (a {bb.architecture} "
                                  "backbone whose DiT takes only the noisy latents); it is widened here")
        bb.transformer = widened_for_context(bb.transformer).eval()
        return bb

    def example(self, rng: np.random.Generator, position: int) -> tuple[Drawn, list[str]]:
        a = self.args
        in_context = bool(rng.random() < a.in_context_share)
        if self.streams:
            kind = "reference" if in_context else "edit"
            rec, skipped = self.streams[kind][position]
            m = rec.media
            extra = {"source": None, "references": m["references"]} if in_context else \
                {"source": m["source"], "references": None}
            return Drawn(m["file_name"] if in_context else m["target"], rec.text, f"data-{kind}:{rec.key}",
                         extra=extra), skipped
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
        return Drawn(target, prompt, None if k is None else f"{world}:{k}",
                     extra={"source": source, "references": refs}), []

    def kind(self, rng: np.random.Generator, ex: Drawn) -> str:
        return "context"

    def noise_shape(self, kind: str) -> tuple[int, ...]:
        return self.bb.latent_shape(1, self.size, self.size, self.frames)[1:]

    def _inputs(self, ex: Drawn):
        """`video_tasks`' planner visuals and DiT conditioning of one example."""
        if ex.extra["references"] is None:
            return video_edit_inputs(self.bb, _float_image(ex.extra["source"]), self.fps, "training clip")
        refs = [_float_image(r) for r in ex.extra["references"]]
        return in_context_inputs(self.bb, refs, self.size, self.size, self.frames, "training references",
                                 self.max_references)

    def validation_input(self, ex: Drawn) -> tuple[str, object]:
        if ex.extra["references"] is None:
            return VIDEO_EDIT, _float_image(ex.extra["source"])
        return IN_CONTEXT, [_float_image(r) for r in ex.extra["references"]]

    def visuals(self, ex: Drawn, kind: str) -> list:
        """What the planner sees before the prompt, as `video_tasks` gives it at sampling (without encoding): the
        source clip as a `Video`, or the reference images."""
        if ex.extra["references"] is None:
            return [clip_visual(_float_image(ex.extra["source"]), self.fps, "training clip")]
        return list(planner_visual(_float_image(np.stack(ex.extra["references"]))))

    def inputs(self, drawn: list[Drawn], kinds: list[str]) -> dict:
        key = lambda x, what: None if x.key is None else f"{x.key}:{what}"  # noqa: E731

        def conditioning(todo: list[int]) -> list[torch.Tensor]:  # context latents and mask, one tensor per sample
            out = []
            for i in todo:
                c = self._inputs(drawn[i]).conditioning
                out.append(torch.cat([c.context, c.context_mask], 1)[0].float())
            return out

        def targets(todo: list[int]) -> torch.Tensor:
            with torch.no_grad():
                return self.bb.encode(torch.stack([clip_pixels(drawn[i].target) for i in todo]).to(self.device)).float()

        cond = torch.stack(self.latents.many([key(x, "condition") for x in drawn], conditioning)).to(self.device)
        z = torch.stack(self.latents.many([key(x, "target") for x in drawn], targets)).to(self.device)
        c = z.shape[1]
        return {"z": z, "context": cond[:, :c], "context_mask": cond[:, c:]}

    def conditioning(self, batch: dict, idx: list[int], kind: str) -> Conditioning:
        return Conditioning(context=take(batch["context"], idx), context_mask=take(batch["context_mask"], idx))

    def recipe(self) -> dict:
        a = self.args
        data = "clip edits + reference scenes (training split)" if not self.streams else \
            " + ".join(str(d) for d in (a.data, a.reference_data) if d is not None)
        return {"task": self.task, "serves": list(self.serves), "max_references": self.max_references,
                "in_context_share": a.in_context_share, "keyframes": a.keyframes if a.stage == "metacanvas" else None,
                "mask_channels": self.bb.mask_channels, "clip": [self.size, self.size, self.frames],
                "fps": self.fps, "pool": a.pool, "data": data}


class VideoContext(CanvasDiTTask):
    name = VIDEO_CONTEXT_TASK
    source = ClipContexts

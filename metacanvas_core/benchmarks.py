"""The tiny worlds' benchmarks, one per task: which held-out scenes, at what size, what each sample is given besides
its prompt, what the true renders are, and how one list of outputs per seed is scored (`aggregate` makes the
scores over seeds for all of them).

Text-to-image is scored GenEval-style per image (`world/scorer.py`), text- and image-to-video per clip
(`world/clip_scorer.py`), image editing per edit (`world/edit_scorer.py`), video editing and in-context video per
frame (`world/clip_edit_scorer.py`). `evaluation.py` runs them; each task's definition (`tasks.py`) names its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .world import clips
from .world.clip_edit_scorer import EDIT_KEYS, score_clip_edits, score_reference_clips
from .world.clip_edits import (
    ClipEdit, ReferenceScene, clip_edit_benchmark, reference_benchmark, render_clip_edit, render_references,
)
from .world.clip_scorer import PASS_KEYS, score_clips
from .world.edit_scorer import score_edits
from .world.edits import Edit, edit_benchmark, render_pair
from .world.scorer import detect, failure_shares, layout_score, position_score, score_detections
from .world.shapes import Scene, benchmark_prompts, model_pixels, render
from .world.tiny_flux import EDIT_IMAGE_SIZE
from .world.tiny_models import IMAGE_SIZE


def _caption(scene) -> str:
    return scene.caption


def _nothing(chunk: list) -> None:
    return None


@dataclass(frozen=True)
class Benchmark:
    """What one task's benchmark is. An output is one image (H, W, 3) or clip (F, H, W, 3) in [0, 1]; `score` takes
    the scenes and one list of outputs per seed."""

    scenes: Callable[[int, str], list]  # (n, split) -> the benchmark scenes, the same for every method
    width: int
    height: int
    frames: int
    truth: Callable[[list, np.random.Generator | None], np.ndarray]  # true renders as the VAE takes them, in [-1, 1]
    score: Callable[[list, list[list[np.ndarray]]], dict]
    # What a call's samples are given besides their prompts, as the task takes it (start or source images, a source
    # clip, reference images); None for nothing.
    given: Callable[[list], torch.Tensor | None] = _nothing
    batch: int = 50  # samples generated together (clips: fewer, their decoding holds every frame at once)
    prompt: Callable[[object], str] = _caption

    def outputs(self, images: torch.Tensor) -> list[np.ndarray]:
        """Decoded images (B * frames, H, W, 3) -> one output per sample."""
        x = images.numpy()
        return list(x if self.frames == 1 else x.reshape(-1, self.frames, *x.shape[1:]))


def aggregate(per_seed: list[dict], graded: dict[str, int] | None = None) -> dict:
    """Scores over seeds from one dict of scores per seed: `scores`, the mean of every number (nested dicts alike,
    e.g. per edit kind; a key that some seed lacks is left out), and `per_seed` as given. For the pass rates named in
    `graded` (key -> samples graded per seed) also `stderr`: the binomial standard error over every seed's samples,
    and that of `overall` as the mean of those rates, unless `overall` is graded itself."""
    result = {"scores": _mean(per_seed), "per_seed": per_seed}
    if graded:
        mean = result["scores"]
        var = {k: mean[k] * (1 - mean[k]) / (n * len(per_seed)) for k, n in graded.items() if k in mean}
        stderr = {k: float(np.sqrt(v)) for k, v in var.items()}
        if "overall" not in graded:
            stderr["overall"] = float(np.sqrt(sum(var.values())) / len(var))
        result["stderr"] = stderr
    return result


def _mean(per_seed: list[dict]) -> dict:
    shared = set.intersection(*(set(r) for r in per_seed))
    return {k: _mean([r[k] for r in per_seed]) if isinstance(v, dict) else float(np.mean([r[k] for r in per_seed]))
            for k, v in per_seed[0].items() if k in shared}


# -- text-to-image -----------------------------------------------------------------------------------------------

def score_images(scenes: list[Scene], runs: list[list[np.ndarray]]) -> dict:
    """Per-category scores of one list of images per seed (`aggregate`d, the standard error over a category's
    samples: n/6 prompts x seeds), the object position score, the layout score and why the failing images fail."""
    found = [[detect(image) for image in images] for images in runs]  # detect once, summarise four ways
    per_seed = [score_detections(scenes, f) for f in found]
    layouts = [layout_score(scenes, f) for f in found]
    per_category = max(1, len(scenes) // 6)
    return {
        **aggregate(per_seed, {k: per_category for k in per_seed[0] if k != "overall"}),
        "object_position_score": float(np.mean([position_score(scenes, f) for f in found])),
        "layout_score": None if layouts[0] is None else float(np.mean(layouts)),
        # Why the failing images fail, per category (shares of its prompts, mean over seeds).
        "failures": aggregate([failure_shares(scenes, f) for f in found])["scores"],
    }


def _image_scenes(n: int, split: str) -> list[Scene]:
    return benchmark_prompts(n, split=split)


def _image_truth(scenes: list[Scene], rng: np.random.Generator | None) -> np.ndarray:
    return model_pixels(np.stack([render(c.objects, IMAGE_SIZE, rng) for c in scenes]))


# -- text- and image-to-video ------------------------------------------------------------------------------------

def score_clip_runs(scenes: list[clips.ClipScene], runs: list[list[np.ndarray]]) -> dict:
    """Clip scores (`clip_scorer.score_clips`) of one list of clips per seed, `aggregate`d: the standard error of
    each pass rate over every clip it applies to (still objects: the clips that have one)."""
    stills = sum(bool(c.still) for c in scenes)
    return aggregate([score_clips(scenes, outputs) for outputs in runs],
                     {k: stills if k == "still_objects" else len(scenes) for k in PASS_KEYS})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (capped at 100 dB for identical images)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(min(100.0, 10 * np.log10(1 / max(mse, 1e-10))))


def start_images(scenes: list[clips.ClipScene]) -> torch.Tensor:
    """The clips' true first frames (no jitter), (B, H, W, 3) in [0, 1]: the given images of image-to-video."""
    return torch.from_numpy(np.stack([clips.start_image(c) for c in scenes])).float().div(255)


def score_i2v_runs(scenes: list[clips.ClipScene], runs: list[list[np.ndarray]]) -> dict:
    """Clip scores, plus how well each clip's first frame keeps the given image after the VAE round trip."""
    given = start_images(scenes).numpy()
    ratios = [psnr(clip[0], image) for outputs in runs for clip, image in zip(outputs, given)]
    return {**score_clip_runs(scenes, runs), "first_frame_psnr": float(np.mean(ratios))}


def _clip_scenes(n: int, split: str) -> list[clips.ClipScene]:
    return clips.benchmark_clips(n, split=split)


def _clips_as_vae_input(x: np.ndarray) -> np.ndarray:
    """uint8 clips (B, F, H, W, 3) -> (B, 3, F, H, W) in [-1, 1], as a video VAE takes them."""
    b, f, h, w, _ = x.shape
    return np.ascontiguousarray(model_pixels(x.reshape(-1, h, w, 3)).reshape(b, f, 3, h, w).transpose(0, 2, 1, 3, 4))


def _clip_truth(scenes: list[clips.ClipScene], rng: np.random.Generator | None) -> np.ndarray:
    return _clips_as_vae_input(np.stack([clips.render_clip(c, clips.FRAMES, clips.SIZE, rng) for c in scenes]))


def _unjittered_clip_truth(scenes: list[clips.ClipScene], rng: np.random.Generator | None) -> np.ndarray:
    """Image-to-video's true clips open with the given (unjittered) first frame, for generated and true alike."""
    return _clip_truth(scenes, None)


# -- image editing -----------------------------------------------------------------------------------------------

EDIT_SUMMARY = ("overall", "edit_correct", "preservation")


def source_images(edits: list[Edit], size: int = EDIT_IMAGE_SIZE) -> torch.Tensor:
    """The edits' source images (unjittered renders), (B, size, size, 3) in [0, 1]: what every method edits."""
    return torch.from_numpy(np.stack([render_pair(e, size)[0] for e in edits])).float().div(255)


def score_edit_runs(edits: list[Edit], runs: list[list[np.ndarray]], size: int = EDIT_IMAGE_SIZE) -> dict:
    """Edit scores of one list of outputs per seed, each graded against its source: overall, edit_correct and
    preservation, in all and per edit kind, `aggregate`d (the standard error of a 0/1 score over every graded
    image: an upper bound for preservation and overall, which lie in [0, 1])."""
    sources = [render_pair(e, size)[0] for e in edits]
    result = aggregate([score_edits(edits, outputs, sources) for outputs in runs],
                       {k: len(edits) for k in EDIT_SUMMARY})
    mean = result["scores"]
    per_kind = {kind: {k: v[k] for k in EDIT_SUMMARY} for kind, v in mean["per_kind"].items()}
    return {**result, "scores": {**{k: mean[k] for k in EDIT_SUMMARY}, "per_kind": per_kind}}


def _edit_scenes(n: int, split: str) -> list[Edit]:
    return edit_benchmark(n, split=split)


def _edit_truth(edits: list[Edit], rng: np.random.Generator | None) -> np.ndarray:
    """The edits' true results (unjittered, as their sources)."""
    return model_pixels(np.stack([render_pair(e, EDIT_IMAGE_SIZE)[1] for e in edits]))


def _instruction(edit: Edit | ClipEdit) -> str:
    return edit.instruction


# -- video editing and in-context video ---------------------------------------------------------------------------

def edit_sources(edits: list[ClipEdit]) -> list[np.ndarray]:
    """The benchmark edits' source clips, unjittered: what every method is asked to edit."""
    return [render_clip_edit(e)[0] for e in edits]


def score_clip_edit_runs(edits: list[ClipEdit], runs: list[list[np.ndarray]]) -> dict:
    """Video edits (`clip_edit_scorer.score_clip_edits`) of one list of clips per seed: the mean over seeds of
    overall, edit_correct, preservation (means over the edit kinds) and per kind, and the per-seed scores."""
    sources = edit_sources(edits)
    result = aggregate([score_clip_edits(edits, outputs, sources) for outputs in runs])
    mean = result["scores"]
    return {**result, "scores": {k: mean[k] for k in EDIT_KEYS}, "per_kind": mean["per_kind"]}


def score_reference_runs(refs: list[ReferenceScene], runs: list[list[np.ndarray]]) -> dict:
    """In-context clips (`clip_edit_scorer.score_reference_clips`: overall, reference_fidelity, the clip scorer's
    motion keys, flicker) of one list of clips per seed, `aggregate`d."""
    return aggregate([score_reference_clips(refs, outputs) for outputs in runs])


def _clip_edit_scenes(n: int, split: str) -> list[ClipEdit]:
    return clip_edit_benchmark(n, split=split)


def _clip_edit_truth(edits: list[ClipEdit], rng: np.random.Generator | None) -> np.ndarray:
    return _clips_as_vae_input(np.stack([render_clip_edit(e, rng=rng)[1] for e in edits]))


def _source_clip(chunk: list[ClipEdit]) -> torch.Tensor:
    """The source clip (one edit per call: a call's inputs are shared by its prompts)."""
    (source,) = edit_sources(chunk)
    return torch.from_numpy(source).float().div(255)


def _reference_scenes(n: int, split: str) -> list[ReferenceScene]:
    return reference_benchmark(n, split=split)


def _reference_truth(refs: list[ReferenceScene], rng: np.random.Generator | None) -> np.ndarray:
    return _clips_as_vae_input(np.stack([clips.render_clip(r.scene, rng=rng) for r in refs]))


def _reference_images(chunk: list[ReferenceScene]) -> torch.Tensor:
    """The reference images (unjittered; one scene per call)."""
    (scene,) = chunk
    return torch.from_numpy(np.stack(render_references(scene))).float().div(255)


def _reference_prompt(ref: ReferenceScene) -> str:
    return ref.prompt


_CLIP = dict(width=clips.SIZE, height=clips.SIZE, frames=clips.FRAMES)
TEXT_TO_IMAGE = Benchmark(_image_scenes, IMAGE_SIZE, IMAGE_SIZE, 1, _image_truth, score_images)
TEXT_TO_VIDEO = Benchmark(_clip_scenes, truth=_clip_truth, score=score_clip_runs, batch=10, **_CLIP)
IMAGE_TO_VIDEO = Benchmark(_clip_scenes, truth=_unjittered_clip_truth, score=score_i2v_runs, given=start_images,
                           batch=10, **_CLIP)
# Every sample edits its own source image, which planner and DiT both get.
IMAGE_EDITING = Benchmark(_edit_scenes, EDIT_IMAGE_SIZE, EDIT_IMAGE_SIZE, 1, _edit_truth, score_edit_runs,
                          given=source_images, batch=25, prompt=_instruction)
# One sample per call (each has its own source clip or references), the same seeds as the other benchmarks.
VIDEO_EDITING = Benchmark(_clip_edit_scenes, truth=_clip_edit_truth, score=score_clip_edit_runs, given=_source_clip,
                          batch=1, prompt=_instruction, **_CLIP)
IN_CONTEXT_VIDEO = Benchmark(_reference_scenes, truth=_reference_truth, score=score_reference_runs,
                             given=_reference_images, batch=1, prompt=_reference_prompt, **_CLIP)

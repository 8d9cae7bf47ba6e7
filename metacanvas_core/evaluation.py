"""The shapes-world benchmarks: held-out prompts, fixed seeds, scores per category.

One evaluation for every task; what differs per task is a small `Benchmark` definition (which scenes, at what size,
what each sample is given besides its caption, how a run is scored): text-to-image is scored GenEval-style per image
(`world/scorer.py`), text- and image-to-video per clip (`world/clip_scorer.py`), video editing and in-context video
per frame (`world/clip_edit_scorer.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .backbones.base import BackboneAdapter
from .errors import MetaCanvasError
from .evaluation_edit import score_edit_runs, source_images
from .pipeline import GenerationResult, MetaCanvasPipeline
from .sampling import latents_to_images
from .schedulers import DEFAULT_SAMPLER, DEFAULT_SHIFT, make_scheduler, scheduler_name
from .video_tasks import IN_CONTEXT, VIDEO_EDIT
from .world import clips
from .world.clip_edit_scorer import EDIT_KEYS, score_clip_edits, score_reference_clips
from .world.clip_edits import (
    ClipEdit, ReferenceScene, clip_edit_benchmark, reference_benchmark, render_clip_edit, render_references,
)
from .world.clip_scorer import PASS_KEYS, score_clips
from .world.scorer import detect, failure_shares, layout_score, position_score, score_detections
from .world.edits import edit_benchmark, render_pair
from .world.shapes import Scene, benchmark_prompts, model_pixels, render
from .world.tiny_flux import EDIT_IMAGE_SIZE
from .world.tiny_models import IMAGE_SIZE


@dataclass(frozen=True)
class Benchmark:
    """What one task's benchmark is. An output is one image (H, W, 3) or clip (F, H, W, 3) in [0, 1]; `score` takes
    the scenes and one list of outputs per seed."""

    task: str
    scenes: Callable[[int, str], list]  # (n, split) -> the benchmark scenes, the same for every method
    width: int
    height: int
    frames: int
    truth: Callable[[list, np.random.Generator], np.ndarray]  # true renders as the VAE takes them, in [-1, 1]
    score: Callable[[list, list[list[np.ndarray]]], dict]
    # What the task's samples are given besides their prompts (its `given`: start or source images, a source clip,
    # reference images), None for none.
    given: Callable[[list], torch.Tensor | None] = lambda chunk: None
    batch: int = 50  # samples generated together (clips: fewer, their decoding holds every frame at once)
    prompt: Callable[[object], str] = lambda scene: scene.caption


def _outputs(bench: Benchmark, images: torch.Tensor) -> list[np.ndarray]:
    """Decoded images (B * frames, H, W, 3) -> one output per sample."""
    x = images.numpy()
    return list(x if bench.frames == 1 else x.reshape(-1, bench.frames, *x.shape[1:]))


def evaluate(
    pipe: MetaCanvasPipeline,
    task: str = "t2i",
    n: int = 200,
    seeds: tuple[int, ...] = (0,),
    steps: int = 20,
    cfg: float = 3.0,
    canvas_only: bool = False,
    batch: int | None = None,
    split: str = "heldout",
    sampler: str = DEFAULT_SAMPLER,
    shift: float = DEFAULT_SHIFT,
) -> dict:
    """Scores over `n` held-out prompts of `task`'s benchmark (`split="train"`: seen combinations) for each seed,
    and their mean and spread.

    Sample i of seed s starts from noise seeded with s * 1_000_003 + i, for every method alike. `canvas_only`
    gives the DiT an empty text conditioning; only the canvas carries the prompt.
    """
    bench = benchmark(task)
    scenes = bench.scenes(n, split)
    batch = batch or bench.batch
    scheduler = make_scheduler(pipe.model.backbone.scheduler, sampler, shift)  # fails early on a bad name
    t0 = time.time()
    runs = []
    for s in seeds:
        outputs = []
        for i in range(0, n, batch):
            chunk = scenes[i : i + batch]
            result: GenerationResult = pipe(
                [bench.prompt(c) for c in chunk], width=bench.width, height=bench.height, frames=bench.frames,
                steps=steps, cfg=cfg, seed=[s * 1_000_003 + i + j for j in range(len(chunk))],
                text_prompt=[""] * len(chunk) if canvas_only else None, sampler=sampler, shift=shift,
                task=task, given=bench.given(chunk),
            )
            outputs.extend(_outputs(bench, result.images))
        runs.append(outputs)
    return {"n": n, "seeds": list(seeds), "steps": steps, "cfg": cfg, "strength": pipe.model.strength,
            "scheduler": scheduler_name(scheduler), "canvas_only": canvas_only, "split": split,
            **bench.score(scenes, runs), "seconds": round(time.time() - t0, 1)}


def evaluate_vae_round_trip(
    backbone: BackboneAdapter, task: str = "t2i", n: int = 200, seeds: tuple[int, ...] = (0,),
    split: str = "heldout", batch: int | None = None,
) -> dict:
    """The ceiling the backbone's VAE leaves: the benchmark scenes rendered (jittered with each seed), encoded,
    decoded and scored like generated samples, `batch` at a time (default: images all at once)."""
    bench = benchmark(task)
    scenes = bench.scenes(n, split)
    batch = batch or (n if bench.frames == 1 else bench.batch)
    t0 = time.time()
    runs = []
    for s in seeds:
        rng = np.random.default_rng(s)
        outputs = []
        for i in range(0, n, batch):
            truth = bench.truth(scenes[i : i + batch], rng)
            with torch.no_grad():
                latents = backbone.encode(torch.from_numpy(truth).to(backbone.device))
            outputs.extend(_outputs(bench, latents_to_images(backbone, latents)))
        runs.append(outputs)
    return {"n": n, "seeds": list(seeds), "text": "-", "canvas_only": False, "split": split,
            **bench.score(scenes, runs), "seconds": round(time.time() - t0, 1)}


def score_runs(scenes: list[Scene], runs: list[list[np.ndarray]]) -> dict:
    """Per-category scores of one list of images per seed: the mean over seeds, its standard error, the per-seed
    scores, the object position score and why the failing images fail."""
    found = [[detect(image) for image in images] for images in runs]  # detect once, summarise four ways
    per_seed = [score_detections(scenes, f) for f in found]
    failures = [failure_shares(scenes, f) for f in found]
    layouts = [layout_score(scenes, f) for f in found]
    mean = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
    # Standard error of a pass rate over all samples of a category (n/6 prompts x seeds).
    per_cat = max(1, len(scenes) // 6) * len(runs)
    var = {k: v * (1 - v) / per_cat for k, v in mean.items() if k != "overall"}
    stderr = {k: float(np.sqrt(v)) for k, v in var.items()}
    stderr["overall"] = float(np.sqrt(sum(var.values())) / len(var))
    return {
        "scores": mean, "stderr": stderr, "per_seed": per_seed,
        "object_position_score": float(np.mean([position_score(scenes, f) for f in found])),
        "layout_score": None if layouts[0] is None else float(np.mean(layouts)),
        # Why the failing images fail, per category (shares of its prompts, mean over seeds).
        "failures": {c: {k: float(np.mean([f[c][k] for f in failures])) for k in failures[0][c]} for c in failures[0]},
    }


def score_clip_runs(scenes: list[clips.ClipScene], runs: list[list[np.ndarray]]) -> dict:
    """Clip scores (`clip_scorer.score_clips`) of one list of clips per seed: the mean over seeds, the standard
    error of each pass rate and of `overall`, and the per-seed scores."""
    per_seed = [score_clips(scenes, outputs) for outputs in runs]
    mean = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
    # Standard error of a pass rate over every clip it applies to (still objects: clips that have one) x seeds.
    count = {k: (sum(bool(c.still) for c in scenes) if k == "still_objects" else len(scenes)) * len(runs)
             for k in PASS_KEYS if k in mean}
    var = {k: mean[k] * (1 - mean[k]) / count[k] for k in count}
    stderr = {k: float(np.sqrt(v)) for k, v in var.items()}
    stderr["overall"] = float(np.sqrt(sum(var.values())) / len(var))
    return {"scores": mean, "stderr": stderr, "per_seed": per_seed}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (capped at 100 dB for identical images)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(min(100.0, 10 * np.log10(1 / max(mse, 1e-10))))


def _start_images(scenes: list[clips.ClipScene]) -> torch.Tensor:
    """The clips' true first frames (no jitter), (B, H, W, 3) in [0, 1]: the given images of image-to-video."""
    return torch.from_numpy(np.stack([clips.start_image(c) for c in scenes])).float().div(255)


def score_i2v_runs(scenes: list[clips.ClipScene], runs: list[list[np.ndarray]]) -> dict:
    """Clip scores, plus how well each clip's first frame keeps the given image after the VAE round trip."""
    given = _start_images(scenes).numpy()
    ratios = [psnr(clip[0], image) for outputs in runs for clip, image in zip(outputs, given)]
    return {**score_clip_runs(scenes, runs), "first_frame_psnr": float(np.mean(ratios))}


def _image_truth(scenes: list[Scene], rng: np.random.Generator | None) -> np.ndarray:
    return model_pixels(np.stack([render(c.objects, IMAGE_SIZE, rng) for c in scenes]))


def _clip_truth(scenes: list[clips.ClipScene], rng: np.random.Generator | None) -> np.ndarray:
    """True clips as a video VAE takes them: (B, 3, frames, H, W) in [-1, 1]."""
    x = np.stack([clips.render_clip(c, clips.FRAMES, clips.SIZE, rng) for c in scenes])
    pixels = model_pixels(x.reshape(-1, *x.shape[2:])).reshape(len(scenes), clips.FRAMES, 3, clips.SIZE, clips.SIZE)
    return np.ascontiguousarray(pixels.transpose(0, 2, 1, 3, 4))


def _clips_as_vae_input(x: np.ndarray) -> np.ndarray:
    """uint8 clips (B, F, H, W, 3) -> (B, 3, F, H, W) in [-1, 1], as a video VAE takes them."""
    b, f, h, w, _ = x.shape
    return np.ascontiguousarray(model_pixels(x.reshape(-1, h, w, 3)).reshape(b, f, 3, h, w).transpose(0, 2, 1, 3, 4))


def _mean_over_seeds(per_seed: list[dict]) -> dict:
    """The mean over seeds of every number (nested dicts alike, e.g. per edit kind)."""
    return {k: _mean_over_seeds([r[k] for r in per_seed]) if isinstance(v, dict) else float(np.mean([r[k] for r in
            per_seed])) for k, v in per_seed[0].items()}


def _edit_sources(edits: list[ClipEdit]) -> list[np.ndarray]:
    """The benchmark edits' source clips, unjittered: what every method is asked to edit."""
    return [render_clip_edit(e)[0] for e in edits]


def score_clip_edit_runs(edits: list[ClipEdit], runs: list[list[np.ndarray]]) -> dict:
    """Video edits (`clip_edit_scorer.score_clip_edits`) of one list of clips per seed: the mean over seeds of
    overall, edit_correct, preservation (means over the edit kinds) and per kind, and the per-seed scores."""
    sources = _edit_sources(edits)
    per_seed = [score_clip_edits(edits, outputs, sources) for outputs in runs]
    mean = _mean_over_seeds(per_seed)
    return {"scores": {k: mean[k] for k in EDIT_KEYS}, "per_kind": mean["per_kind"], "per_seed": per_seed}


def score_reference_runs(refs: list[ReferenceScene], runs: list[list[np.ndarray]]) -> dict:
    """In-context clips (`clip_edit_scorer.score_reference_clips`: overall, reference_fidelity, the clip scorer's
    motion keys, flicker) of one list of clips per seed: the mean over seeds and the per-seed scores."""
    per_seed = [score_reference_clips(refs, outputs) for outputs in runs]
    keys = set.intersection(*(set(r) for r in per_seed))  # a key no clip of some seed applies to is left out
    return {"scores": {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0] if k in keys},
            "per_seed": per_seed}


def _video_edit_given(chunk: list[ClipEdit]) -> torch.Tensor:
    """The source clip (one edit per call: a call's inputs are shared by its prompts)."""
    (source,) = _edit_sources(chunk)
    return torch.from_numpy(source).float().div(255)


def _in_context_given(chunk: list[ReferenceScene]) -> torch.Tensor:
    """The reference images (unjittered; one scene per call)."""
    (scene,) = chunk
    return torch.from_numpy(np.stack(render_references(scene))).float().div(255)


BENCHMARKS: dict[str, Benchmark] = {
    "t2i": Benchmark("t2i", lambda n, split: benchmark_prompts(n, split=split), IMAGE_SIZE, IMAGE_SIZE, 1,
                     _image_truth, score_runs),
    "t2v": Benchmark("t2v", lambda n, split: clips.benchmark_clips(n, split=split), clips.SIZE, clips.SIZE,
                     clips.FRAMES, _clip_truth, score_clip_runs, batch=10),
    # The given first frame is the clip's own, unjittered, for generated and true clips alike.
    "i2v": Benchmark("i2v", lambda n, split: clips.benchmark_clips(n, split=split), clips.SIZE, clips.SIZE,
                     clips.FRAMES, lambda scenes, rng: _clip_truth(scenes, None), score_i2v_runs,
                     given=_start_images, batch=10),
    # One sample per call (each has its own source clip or references), the same seeds as the other benchmarks.
    VIDEO_EDIT: Benchmark(VIDEO_EDIT, lambda n, split: clip_edit_benchmark(n, split=split), clips.SIZE, clips.SIZE,
                          clips.FRAMES, lambda edits, rng: _clips_as_vae_input(np.stack(
                              [render_clip_edit(e, rng=rng)[1] for e in edits])),
                          score_clip_edit_runs, given=_video_edit_given, batch=1, prompt=lambda e: e.instruction),
    IN_CONTEXT: Benchmark(IN_CONTEXT, lambda n, split: reference_benchmark(n, split=split), clips.SIZE, clips.SIZE,
                          clips.FRAMES, lambda refs, rng: _clips_as_vae_input(np.stack(
                              [clips.render_clip(r.scene, rng=rng) for r in refs])),
                          score_reference_runs, given=_in_context_given, batch=1, prompt=lambda r: r.prompt),
    # Image editing (FLUX.1-Kontext): every sample edits its own source image, which planner and DiT both get.
    "edit": Benchmark("edit", lambda n, split: edit_benchmark(n, split=split), EDIT_IMAGE_SIZE, EDIT_IMAGE_SIZE, 1,
                      lambda edits, rng: model_pixels(np.stack([render_pair(e, EDIT_IMAGE_SIZE)[1] for e in edits])),
                      score_edit_runs, given=source_images, batch=25,
                      prompt=lambda e: e.instruction),
}


def benchmark(task: str) -> Benchmark:
    if task not in BENCHMARKS:
        raise MetaCanvasError(f"no benchmark for task {task!r}; tasks: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[task]


def _text_column(result: dict) -> str:
    """What the DiT's text conditioning was: the prompt, empty (canvas alone), or "-" where no DiT ran."""
    return result.get("text") or ("empty" if result["canvas_only"] else "prompt")


_SAMPLER_FIELDS = ("steps", "cfg", "strength", "scheduler")
# What results written before a field was recorded were sampled with, where that was fixed (no scheduler here: it
# came from the backbone folder).
_OLD_DEFAULTS = {"strength": 1.0}


def _method_cell(result: dict, varying: set[str]) -> str:
    notes = ["training combinations"] if result.get("split") == "train" else []
    if varying and "steps" in result:
        notes.append(f"{result['steps']} steps, CFG {result['cfg']:g}")
        strength = result.get("strength", _OLD_DEFAULTS["strength"])
        notes += [f"strength {strength:g}"] if strength != _OLD_DEFAULTS["strength"] else []
        notes += [result["scheduler"]] if "scheduler" in varying and "scheduler" in result else []
    return result["method"] + (f" ({'; '.join(notes)})" if notes else "")


def _sampler_varies(results: list[dict]) -> set[str]:
    """The sampler settings that differ between rows, which then say how each was sampled; a table of one setting
    stays uncluttered. Results written before a field was recorded count as its old default, or are left out of
    that field's comparison where there was none."""
    known = [{**_OLD_DEFAULTS, **r} for r in results if "steps" in r]
    return {f for f in _SAMPLER_FIELDS if len({r[f] for r in known if f in r}) > 1}


def _layout_cell(result: dict) -> str:
    layout = result.get("layout_score")  # absent from results written before it existed
    return "-" if layout is None else f"{100 * layout:.1f}"


def markdown_table(results: list[dict]) -> str:
    """One row per evaluation result: per-category scores (x100) with the overall standard error."""
    from .world.shapes import CATEGORIES

    head = "| method | text to DiT | " + " | ".join(CATEGORIES) + " | overall | object position | layout |"
    rows = [head, "|" + "---|" * (len(CATEGORIES) + 5)]
    varying = _sampler_varies(results)
    for r in results:
        s, e = r["scores"], r["stderr"]
        cells = " | ".join(f"{100 * s[c]:.1f}" for c in CATEGORIES)
        rows.append(f"| {_method_cell(r, varying)} | {_text_column(r)} | {cells} | **{100 * s['overall']:.1f}** "
                    f"± {100 * e['overall']:.1f} | {100 * r['object_position_score']:.1f} | {_layout_cell(r)} |")
    return "\n".join(rows)


def markdown_failures(results: list[dict]) -> str:
    """One row per evaluation result: per category, why its failing images fail (% of its prompts, largest first)."""
    from .world.shapes import CATEGORIES

    rows = ["| method | text to DiT | " + " | ".join(CATEGORIES) + " |", "|" + "---|" * (len(CATEGORIES) + 2)]
    varying = _sampler_varies(results)
    for r in results:
        cells = []
        for c in CATEGORIES:
            kinds = sorted(r["failures"][c].items(), key=lambda kv: -kv[1])
            cells.append(", ".join(f"{k} {100 * v:.0f}" for k, v in kinds if v > 0) or "-")
        rows.append(f"| {_method_cell(r, varying)} | {_text_column(r)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


_CLIP_COLUMNS = {"motion_direction": "motion direction", "start_cell": "start cell", "end_cell": "end cell",
                 "still_objects": "still objects", "colour_constant": "colour constant",
                 "shape_constant": "shape constant"}


def markdown_clip_table(results: list[dict]) -> str:
    """One row per clip evaluation result (t2v, i2v): pass rates (x100) with the overall standard error, flicker
    (mean absolute frame-to-frame change outside the movers, x100, lower is better) and, for image-to-video, the
    first frame's PSNR against the given image."""
    head = ("| method | task | text to DiT | " + " | ".join(_CLIP_COLUMNS.values())
            + " | overall | flicker (lower is better) | first frame PSNR (dB) |")
    rows = [head, "|" + "---|" * (len(_CLIP_COLUMNS) + 6)]
    varying = _sampler_varies(results)
    for r in results:
        s, e = r["scores"], r["stderr"]
        cells = " | ".join("-" if c not in s else f"{100 * s[c]:.1f}" for c in _CLIP_COLUMNS)
        ratio = r.get("first_frame_psnr")
        rows.append(f"| {_method_cell(r, varying)} | {r['task']} | {_text_column(r)} | {cells} | "
                    f"**{100 * s['overall']:.1f}** ± {100 * e['overall']:.1f} | {100 * s['flicker']:.2f} | "
                    f"{'-' if ratio is None else f'{ratio:.1f}'} |")
    return "\n".join(rows)


def markdown_context_table(results: list[dict]) -> str:
    """Video editing rows (edit_correct, preservation, overall x100, and overall per edit kind) and in-context rows
    (reference_fidelity, the motion keys, overall), a table per task present."""
    from .world.clip_edits import CLIP_EDIT_KINDS

    tables = []
    edits = [r for r in results if r.get("task") == VIDEO_EDIT]
    varying = _sampler_varies(results)
    if edits:
        rows = ["| method | edit correct | preservation | overall | " + " | ".join(CLIP_EDIT_KINDS) + " |",
                "|" + "---|" * (len(CLIP_EDIT_KINDS) + 4)]
        for r in edits:
            s, kinds = r["scores"], r.get("per_kind", {})
            per = " | ".join(f"{100 * kinds[k]['overall']:.1f}" if k in kinds else "-" for k in CLIP_EDIT_KINDS)
            rows.append(f"| {_method_cell(r, varying)} | {100 * s['edit_correct']:.1f} | "
                        f"{100 * s['preservation']:.1f} | **{100 * s['overall']:.1f}** | {per} |")
        tables.append("Video editing (held-out clip edits; per kind: overall)\n\n" + "\n".join(rows))
    refs = [r for r in results if r.get("task") == IN_CONTEXT]
    if refs:
        keys = ("reference_fidelity", *(k for k in _CLIP_COLUMNS if k != "still_objects"), "still_objects")
        names = {"reference_fidelity": "reference fidelity", **_CLIP_COLUMNS}
        rows = ["| method | " + " | ".join(names[k] for k in keys) + " | overall |", "|" + "---|" * (len(keys) + 2)]
        for r in refs:
            s = r["scores"]
            cells = " | ".join("-" if k not in s else f"{100 * s[k]:.1f}" for k in keys)
            rows.append(f"| {_method_cell(r, varying)} | {cells} | **{100 * s['overall']:.1f}** |")
        tables.append("In-context video (held-out reference scenes)\n\n" + "\n".join(rows))
    return "\n\n".join(tables)

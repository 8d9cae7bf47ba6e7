"""The six tasks, one small definition each: its name, what it takes besides the prompt and how that becomes what the
planner sees and what the DiT is conditioned on, which weights serve it, its built-in models, its benchmark and
table, and the trainer task that makes its weights.

The command line, the pipeline, evaluation and the nodes read these definitions; a new task is a new definition here,
not a branch through them. What differs between backbones is asked of their adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import benchmarks, result_tables
from .backbones.base import BackboneAdapter
from .benchmarks import Benchmark
from .builtin import CONTEXT_MODELS, EDIT_MODELS, T2I_MODELS, VIDEO_MODELS, BuiltinModels
from .checkpoints import MetaCanvasWeights
from .editing import EDIT_TASK, source_image_inputs
from .errors import MetaCanvasError
from .limits import checked
from .task_inputs import TaskInputs, start_image_inputs
from .video_tasks import IN_CONTEXT, VIDEO_EDIT, in_context_inputs, video_edit_inputs
from .world import clips

SAMPLE_IMAGE, SAMPLE_VIDEO = "Sample Image", "Sample Video"  # the sampling nodes' display names


@dataclass(frozen=True)
class Request:
    """What a caller asks of a task's input: the output's size, how many samples share the call, and what the input
    needs to know besides (a clip's frame rate, the most references the weights were trained with)."""

    width: int | None
    height: int | None
    frames: int | None
    samples: int
    fps: float
    max_references: int | None
    where: str  # the input's name in messages: a node input, a flag, ...


@dataclass(frozen=True)
class Given:
    """The one input a task takes besides the prompt, and how it becomes the task's inputs."""

    what: str  # in messages, e.g. "start image"
    part: str  # the Conditioning field it becomes (asked of the backbone first)
    node_input: str  # the sampling node's input that takes it
    flag: str  # the command line's: --image or --video
    build: Callable[[BackboneAdapter, object, Request], TaskInputs]
    several: bool = False  # --image repeats (one file per reference image)
    keeps_size: bool = False  # the output has this input's size and frame count (a clip to edit)


@dataclass(frozen=True)
class TaskDefinition:
    name: str  # --task, and what weights' recipes say they were trained for
    title: str
    backbone: str  # what a --backbone for it is
    node: str  # the node that samples it
    models: BuiltinModels
    benchmark: Benchmark  # its size is the task's default output size (the tiny world's)
    table: Callable[[list[dict]], str]  # Markdown of its `evaluate` results
    training_task: str  # `python -m metacanvas_core train <this>` makes its weights
    example_prompt: str
    given: Given | None = None

    @property
    def clip(self) -> bool:
        """Whether it makes clips."""
        return self.benchmark.frames > 1

    def builtin(self, method: str) -> tuple[Path, Path]:
        """The built-in backbone folder and MetaCanvas weights of `method` for this task."""
        return self.models.get(method, self.name, self.backbone)

    def check_weights(self, weights: MetaCanvasWeights) -> int | None:
        """Refuse weights trained for other tasks (their recipe names the task, and `serves` lists what weights
        trained for several serve); the most reference images they were trained with, if recorded."""
        trained = weights.recipe.get("task")
        serves = weights.recipe.get("serves") or ([trained] if trained is not None else [])
        if serves and self.name not in serves:
            serving = f" (serving {', '.join(serves)})" if serves != [trained] else ""
            raise MetaCanvasError(f"the MetaCanvas weights {weights.name!r} were trained for task {trained!r}"
                                  f"{serving}, not {self.name!r} ({self.title}): use weights trained for {self.title}"
                                  f"{_or_serve(serves[0])}")
        most = weights.recipe.get("max_references")
        return int(most) if most is not None else None

    def check(self, backbone: BackboneAdapter, weights: MetaCanvasWeights | None = None,
              where: str | None = None) -> int | None:
        """The backbone's and the weights' checks, before anything is loaded or built (nodes call it first; `inputs`
        again; `where` names the task's input); the most reference images the weights were trained with, if
        recorded. A backbone that cannot take the task's input is named for that (after the weights), else one that
        makes clips for a task that makes images or the other way round is refused first: its 'image' would be a
        1-frame clip of blobs (or its 'clip' one picture), whatever the weights' checks let through."""
        takes = self.given is None or backbone.takes(self.given.part)
        if takes and backbone.makes_clips != self.clip:
            made, wanted = ("clips", "images") if backbone.makes_clips else ("images", "clips")
            other = next(t for t in TASKS.values() if t.clip == backbone.makes_clips)
            raise MetaCanvasError(f"the {backbone.architecture} backbone {backbone.name!r} makes {made}, not {wanted}: "
                                  f"sample it with {other.node} (--task {other.name}), or load {self.backbone} for "
                                  f"{self.title}")
        most = None if weights is None else self.check_weights(weights)
        if not takes:
            raise MetaCanvasError(f"{where or self.given.what}: the {backbone.architecture} backbone {backbone.name!r} "
                                  f"takes no {self.given.what} ({self.title}): remove it, or load {self.backbone}")
        return most

    def inputs(
        self, backbone: BackboneAdapter, given=None, *, width: int | None = None, height: int | None = None,
        frames: int | None = None, samples: int = 1, fps: float = clips.FPS, weights: MetaCanvasWeights | None = None,
        where: str | None = None,
    ) -> TaskInputs:
        """What the planner sees and what `backbone`'s DiT gets for an output of the given size (None: the task's
        default, or for a clip to edit the clip's own), from `given`, this task's input (a ComfyUI IMAGE batch; a
        list of images for several references). `weights` are checked to serve this task; `where` names the input
        in messages (default: what it is)."""
        most = self.check(backbone, weights, where)
        if self.given is None:
            if given is not None:
                raise MetaCanvasError(f"{self.title} takes nothing besides the prompt: remove {where or 'the input'}")
            size = (width or self.benchmark.width, height or self.benchmark.height, frames or self.benchmark.frames)
            checked(width=size[0], height=size[1], frames=size[2])
            backbone.token_grid(*size)
            return TaskInputs.none(*size)
        what, where = self.given.what, where or self.given.what
        if given is None:
            raise MetaCanvasError(f"{self.title} needs a {what}" + (f" ({where})" if where != what else ""))
        if not self.given.keeps_size:
            b = self.benchmark
            width, height, frames = width or b.width, height or b.height, frames or b.frames
            checked(width=width, height=height, frames=frames)
        if self.given.keeps_size and weights is not None and isinstance(given, torch.Tensor) and given.ndim == 4:
            # a clip's size is the output's, rarely chosen for the run: refuse a far one before encoding it
            weights.check_given_size(given.shape[2], given.shape[1], given.shape[0], where)
        built = self.given.build(backbone, given, Request(width, height, frames, samples, fps, most, where))
        asked = (width or built.width, height or built.height, frames or built.frames)
        if self.given.keeps_size and asked != (built.width, built.height, built.frames):
            raise MetaCanvasError(
                f"width x height x frames {'x'.join(map(str, asked))} differ from the {where}'s "
                f"{built.width}x{built.height}x{built.frames}: {self.title} keeps its size; leave them out or set "
                "them to it"
            )
        return built


def _or_serve(name: str) -> str:
    """How to use weights for task `name` instead: its input, on the node and the command line."""
    other = TASKS.get(name)
    if other is None:
        return f", or use them for task {name!r}"
    if other.given is None:
        return f", or use them for {other.title} (--task {other.name})"
    return (f", or use them for {other.title}: give its {other.given.what} ({other.node}'s {other.given.node_input}, "
            f"or --task {other.name} {other.given.flag})")


def _start_image(backbone: BackboneAdapter, images: torch.Tensor, r: Request) -> TaskInputs:
    return start_image_inputs(backbone, images, r.width, r.height, r.frames, r.samples, r.where)


def _source_image(backbone: BackboneAdapter, images: torch.Tensor, r: Request) -> TaskInputs:
    return source_image_inputs(backbone, images, r.width, r.height, r.samples, r.where)


def _source_clip(backbone: BackboneAdapter, clip: torch.Tensor, r: Request) -> TaskInputs:
    return video_edit_inputs(backbone, clip, r.fps, r.where)


def _references(backbone: BackboneAdapter, references, r: Request) -> TaskInputs:
    """Reference images as a batch (one image each) or a list of images (each (1, H, W, 3) or (H, W, 3))."""
    if isinstance(references, torch.Tensor) and references.ndim == 4 and references.shape[0] > 0:
        references = list(references.split(1))
    elif isinstance(references, torch.Tensor):
        references = [references]  # checked (and refused) with its shape named
    return in_context_inputs(backbone, references, r.width, r.height, r.frames, r.where, r.max_references)


_WAN, _WIDE_WAN = "a Wan 2.2 diffusers folder", "a Wan 2.2 folder made for it: its DiT takes latent x 2 + mask channels"
TEXT_TO_VIDEO_PROMPT = "a red circle moves from left to right and a yellow square at top left"

TASKS: dict[str, TaskDefinition] = {t.name: t for t in (
    TaskDefinition(
        "t2i", "text-to-image", "a SANA diffusers folder", SAMPLE_IMAGE, T2I_MODELS, benchmarks.TEXT_TO_IMAGE,
        result_tables.image_table, training_task="t2i",
        example_prompt="a red circle at top left and a blue square at bottom right"),
    TaskDefinition(
        "t2v", "text-to-video", _WAN, SAMPLE_VIDEO, VIDEO_MODELS, benchmarks.TEXT_TO_VIDEO, result_tables.clip_table,
        training_task="video", example_prompt=TEXT_TO_VIDEO_PROMPT),
    TaskDefinition(
        "i2v", "image-to-video", _WAN, SAMPLE_VIDEO, VIDEO_MODELS, benchmarks.IMAGE_TO_VIDEO,
        result_tables.clip_table, training_task="video", example_prompt=TEXT_TO_VIDEO_PROMPT,
        given=Given("start image", "first_frames", "start_image", "--image", _start_image)),
    TaskDefinition(
        EDIT_TASK, "image editing", "a FLUX.1-Kontext diffusers folder", SAMPLE_IMAGE, EDIT_MODELS,
        benchmarks.IMAGE_EDITING, result_tables.edit_table, training_task="edit",
        example_prompt="make the red circle green",
        given=Given("source image", "reference", "source_image", "--image", _source_image)),
    TaskDefinition(
        VIDEO_EDIT, "video editing", _WIDE_WAN, SAMPLE_VIDEO, CONTEXT_MODELS, benchmarks.VIDEO_EDITING,
        result_tables.video_edit_table, training_task="video-context", example_prompt="make the red circle green",
        given=Given("source clip", "context", "source_video", "--video", _source_clip, keeps_size=True)),
    TaskDefinition(
        IN_CONTEXT, "in-context video", _WIDE_WAN, SAMPLE_VIDEO, CONTEXT_MODELS, benchmarks.IN_CONTEXT_VIDEO,
        result_tables.in_context_table, training_task="video-context",
        example_prompt="the red circle moves from left to right",
        given=Given("reference images", "context", "reference_images", "--image", _references, several=True)),
)}


def task(name: str) -> TaskDefinition:
    """The definition of task `name`, or an error listing the tasks."""
    if name not in TASKS:
        raise MetaCanvasError(f"no task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_of_weights(weights: MetaCanvasWeights | None) -> TaskDefinition:
    """The task `weights` were trained for (the first one they serve); text-to-image for weights that do not say."""
    recipe = {} if weights is None else weights.recipe
    served = [name for name in recipe.get("serves") or [recipe.get("task")] if name in TASKS]
    return TASKS[served[0] if served else "t2i"]


def node_task(node: str, connected: dict[str, object]) -> tuple[TaskDefinition, object, str | None]:
    """The task a sampling node runs, by which of its tasks' inputs is connected (none: the one that takes only the
    prompt), that input and its name."""
    own = [t for t in TASKS.values() if t.node == node]
    chosen = [(t, connected[t.given.node_input], t.given.node_input) for t in own
              if t.given is not None and connected.get(t.given.node_input) is not None]
    if len(chosen) > 1:
        names = [f"{t.given.node_input} ({t.title})" for t in own if t.given is not None]
        raise MetaCanvasError(f"give one of {', '.join(names[:-1])} or {names[-1]}, not several")
    return chosen[0] if chosen else (next(t for t in own if t.given is None), None, None)

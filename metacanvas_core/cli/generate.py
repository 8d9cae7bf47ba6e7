"""`generate`: an image, clip or edit from a prompt, written as PNG, GIF or PNG frames."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import MetaCanvasError
from ..limits import FPS, FRAMES, HEIGHT, SEED, UPSCALE, WIDTH
from ..video_tasks import IN_CONTEXT, VIDEO_EDIT
from ..world.clips import SIZE as CLIP_SIZE
from .options import CONTEXT_TASKS, EDIT, TASK_MODELS, VIDEO_TASKS, common, limited, pipeline, png


def run(args) -> None:
    t0 = time.perf_counter()
    video = args.task in (*VIDEO_TASKS, *CONTEXT_TASKS)
    images = args.image or []
    if bool(images) != (args.task in ("i2v", EDIT, IN_CONTEXT)):
        raise MetaCanvasError("--image goes with --task i2v (the start frame), --task edit (the image to edit) or "
                              "--task in-context (the reference images), and each needs it")
    if len(images) > 1 and args.task != IN_CONTEXT:
        raise MetaCanvasError(f"--task {args.task} takes one --image; several are reference images of --task "
                              f"{IN_CONTEXT}")
    if (args.video is not None) != (args.task == VIDEO_EDIT):
        raise MetaCanvasError(f"--video (the source clip) goes with --task {VIDEO_EDIT}, which needs it")
    if video and args.canvas_preview:
        raise MetaCanvasError("--canvas-preview is for --task t2i; use the Preview Canvas node for keyframes")
    if not video and args.out.suffix.lower() != ".png":
        raise MetaCanvasError(f"--out {str(args.out)!r} must be a .png file name for --task {args.task}")
    size = CLIP_SIZE if video else WIDTH.default
    args.width_given, args.height_given = args.width, args.height
    args.width, args.height = args.width or size, args.height or size
    frames = args.frames if video else 1
    start = source = None
    if images and args.task != IN_CONTEXT:
        from ..pixels import load_image

        image = load_image(images[0], "--image")
        start, source = (image, None) if args.task == "i2v" else (None, image)
    pipe = pipeline(args)
    inputs = _video_task_inputs(args, pipe, images) if args.task in CONTEXT_TASKS else None
    if inputs is not None:
        args.width, args.height, frames = inputs.width, inputs.height, inputs.frames
    if args.empty_text:  # only the canvas would steer
        pipe.model.connector.require_canvas(
            "for --empty-text", "use --method metacanvas or MetaCanvas weights, or drop --empty-text"
        )
    result = pipe(
        args.prompt, negative_prompt=args.negative_prompt, width=args.width, height=args.height, frames=frames,
        start_image=start, source_image=source, video_inputs=inputs, steps=args.steps, cfg=args.cfg, seed=args.seed,
        text_prompt="" if args.empty_text else None, sampler=args.sampler, shift=args.shift,
    )
    if video:
        from ..pixels import save_clip

        save_clip(result.images, args.out, args.fps, args.upscale)
        print(f"wrote {args.out} ({frames} frames of {args.width}x{args.height}, {args.steps} steps, seed "
              f"{args.seed}) in {time.perf_counter() - t0:.1f} s")
        return
    from ..pixels import save_image

    save_image(result.images[0], args.out, args.upscale)
    if args.canvas_preview:
        from ..preview import canvas_to_rgb

        save_image(canvas_to_rgb(result.plan, size=args.width * args.upscale)[0], args.canvas_preview)
    print(f"wrote {args.out} ({args.width}x{args.height}, {args.steps} steps, seed {args.seed}) "
          f"in {time.perf_counter() - t0:.1f} s")


def _video_task_inputs(args, pipe, images: list[Path]):
    """The planner's visuals and the DiT's conditioning of --task video-edit (--video) or in-context (--image ...)."""
    from ..pixels import load_clip, load_image
    from ..video_tasks import check_task_weights, in_context_inputs, video_edit_inputs

    bb = pipe.model.backbone
    most = check_task_weights(pipe.model.connector, args.task, "--weights")
    if args.task == IN_CONTEXT:
        refs = [load_image(p, "--image") for p in images]
        return in_context_inputs(bb, refs, args.width, args.height, args.frames, "--image", most)
    clip, fps = load_clip(args.video, "--video")
    inputs = video_edit_inputs(bb, clip, fps or args.fps, "--video")
    asked = (args.width_given or inputs.width, args.height_given or inputs.height)
    if asked != (inputs.width, inputs.height):
        raise MetaCanvasError(f"--width/--height {asked[0]}x{asked[1]} differ from the --video clip's "
                              f"{inputs.width}x{inputs.height}: an edit keeps the clip's size; drop them")
    return inputs


def register(sub) -> None:
    g = sub.add_parser("generate", help="text-to-image (PNG) or text/image-to-video (GIF or PNG frames) from a prompt")
    g.add_argument("--task", choices=tuple(TASK_MODELS), default="t2i",
                   help="t2i; t2v or i2v (with --image) on the built-in tiny Wan weights of --method (when shipped) "
                        "or a Wan 2.2 --backbone with --weights for it; edit (with --image) on FLUX.1-Kontext: the "
                        "built-in edit weights, or --backbone and --weights; video-edit (with --video) and in-context "
                        "(with --image, one per reference) on a --backbone Wan folder made for them and --weights")
    g.add_argument("--prompt", required=True, help="e.g. 'a red circle at top left and a blue square at bottom right'")
    g.add_argument("--out", type=Path, required=True,
                   help="PNG to write (t2i); for clips a .gif, or any other path for a folder of PNG frames")
    g.add_argument("--image", type=Path, action="append",
                   help="start frame for --task i2v, the image to edit for --task edit, a reference image for --task "
                        "in-context (repeat for several, all one size) (RGB; other sizes are scaled to cover the "
                        "output and centre-cropped)")
    g.add_argument("--video", type=Path, help="--task video-edit: the source clip, an animated .gif or a folder of "
                                              "frames (its size and frame count are the output's)")
    g.add_argument("--frames", type=limited(FRAMES), default=FRAMES.default,
                   help="clip length, 4k+1 frames (t2v, i2v)")
    g.add_argument("--fps", type=limited(FPS), default=FPS.default, help="frame rate of a written .gif (1-120)")
    g.add_argument("--negative-prompt", default="", help="the unconditional plan's prompt (default empty)")
    g.add_argument("--seed", type=limited(SEED), default=0, help="noise seed (0 to 2**64-1)")
    g.add_argument("--width", type=limited(WIDTH), help="pixels (4-8192; default 32, the tiny worlds' size)")
    g.add_argument("--height", type=limited(HEIGHT), help="pixels (4-8192; default 32, the tiny worlds' size)")
    g.add_argument("--empty-text", action="store_true", help="give the DiT no text: the canvas alone steers")
    g.add_argument("--upscale", type=limited(UPSCALE), default=UPSCALE.default,
                   help="nearest-neighbour upscale of what is written, for viewing (1-64; default 8)")
    g.add_argument("--canvas-preview", type=png, help="also write the plan (PCA of the canvas) as PNG")
    common(g, sampling_options=True)
    g.set_defaults(func=run)

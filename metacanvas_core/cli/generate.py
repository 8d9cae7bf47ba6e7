"""`generate`: an image, clip or edit from a prompt, for any task, written as PNG, GIF or PNG frames."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import MetaCanvasError
from ..limits import FPS, FRAMES, HEIGHT, SEED, UPSCALE, WIDTH
from ..tasks import task
from .options import common, given_input, limited, models, pipeline, png, task_flag


def run(args) -> None:
    t0 = time.perf_counter()
    definition = task(args.task)
    found = models(args)  # a missing built-in is named before any file is read
    given, fps = given_input(args, definition)
    if definition.clip and args.canvas_preview:
        raise MetaCanvasError(f"--canvas-preview is for images, not --task {definition.name}; use the Preview Canvas "
                              "node for keyframes")
    if not definition.clip and args.out.suffix.lower() != ".png":
        raise MetaCanvasError(f"--out {str(args.out)!r} must be a .png file name for --task {definition.name}")
    pipe = pipeline(args, found)
    if args.empty_text:  # only the canvas would steer
        pipe.model.connector.require_canvas(
            "for --empty-text", "use --method metacanvas or MetaCanvas weights, or drop --empty-text"
        )
    result = pipe(
        args.prompt, task=definition.name, given=given, fps=fps or args.fps,
        where=None if definition.given is None else definition.given.flag, negative_prompt=args.negative_prompt,
        width=args.width, height=args.height, frames=args.frames, steps=args.steps, cfg=args.cfg, seed=args.seed,
        text_prompt="" if args.empty_text else None, sampler=args.sampler, shift=args.shift,
    )
    from ..pixels import save_clip, save_image

    frames, height, width = result.images.shape[:3]
    if definition.clip:
        save_clip(result.images, args.out, args.fps, args.upscale)
    else:
        save_image(result.images[0], args.out, args.upscale)
    if args.canvas_preview:
        from ..preview import canvas_to_rgb

        save_image(canvas_to_rgb(result.plan, size=width * args.upscale)[0], args.canvas_preview)
    made = f"{frames} frames of {width}x{height}" if definition.clip else f"{width}x{height}"
    upscaled = f"{width * args.upscale}x{height * args.upscale}"
    written = f", written at {upscaled} (--upscale {args.upscale})" if args.upscale > 1 else ""
    print(f"wrote {args.out} ({made}{written}, {args.steps} steps, seed {args.seed}) in "
          f"{time.perf_counter() - t0:.1f} s")


def register(sub) -> None:
    g = sub.add_parser("generate", help="an image (PNG), a clip (GIF or PNG frames) or an edit from a prompt")
    task_flag(g, "what to make, on the built-in tiny models of --method or on --backbone with --weights")
    g.add_argument("--prompt", required=True, help="e.g. 'a red circle at top left and a blue square at bottom right'")
    g.add_argument("--out", type=Path, required=True,
                   help="PNG to write (images); for clips a .gif, or any other path for a folder of PNG frames")
    g.add_argument("--image", type=Path, action="append",
                   help="the task's input image: the start frame (i2v), the image to edit (edit), a reference image "
                        "(in-context: repeat for several, all one size) (RGB; other sizes are scaled to cover the "
                        "output and centre-cropped)")
    g.add_argument("--video", type=Path, help="the source clip of --task video-edit, an animated .gif or a folder of "
                                              "frames (its size and frame count are the output's)")
    g.add_argument("--frames", type=limited(FRAMES),
                   help="clip length, 4k+1 frames (default 17, the tiny clips'; video-edit: the source clip's)")
    g.add_argument("--fps", type=limited(FPS), default=FPS.default,
                   help="frame rate of a written .gif (1-120), and of a --video that does not record its own")
    g.add_argument("--negative-prompt", default="", help="the unconditional plan's prompt (default empty)")
    g.add_argument("--seed", type=limited(SEED), default=0, help="noise seed (0 to 2**64-1)")
    g.add_argument("--width", type=limited(WIDTH), help="pixels generated (4-8192; default 32, the tiny worlds' size; "
                                                        "video-edit: the source clip's)")
    g.add_argument("--height", type=limited(HEIGHT), help="pixels generated (4-8192; default 32, the tiny worlds' "
                                                          "size; video-edit: the source clip's)")
    g.add_argument("--empty-text", action="store_true", help="give the DiT no text: the canvas alone steers")
    g.add_argument("--upscale", type=limited(UPSCALE), default=UPSCALE.default,
                   help="nearest-neighbour enlargement of what is written, for viewing (1-64; default 8: a 32x32 "
                        "image is written as 256x256; 1 writes what was generated)")
    g.add_argument("--canvas-preview", type=png, help="also write the plan (PCA of the canvas) as PNG")
    common(g, sampling_options=True)
    g.set_defaults(func=run)

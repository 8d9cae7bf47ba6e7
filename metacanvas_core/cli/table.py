"""`table`: Markdown tables from `evaluate` and `bench` JSON files."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MetaCanvasError
from ..video_tasks import IN_CONTEXT, VIDEO_EDIT

EDIT = "edit"
VIDEO_TASKS, CONTEXT_TASKS = ("t2v", "i2v"), (VIDEO_EDIT, IN_CONTEXT)


def run(args) -> None:
    from ..evaluation import markdown_clip_table, markdown_context_table, markdown_failures, markdown_table

    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise MetaCanvasError(f"table: no such result file {', '.join(missing)}; write one with `evaluate --json`")
    results = [json.loads(p.read_text()) for p in args.files]
    edits = [r for r in results if r.get("task") == EDIT and "scores" in r]
    if edits:
        from ..evaluation_edit import markdown_edit_table

        print(markdown_edit_table(edits) + "\n")
    evals = [r for r in results if "scores" in r and r.get("task", "t2i") == "t2i"]
    clips = [r for r in results if "scores" in r and r.get("task") in VIDEO_TASKS]
    if evals or not results:
        print(markdown_table(evals))
    if any("failures" in r for r in evals):
        print("\nWhy images fail (% of each category's prompts):\n")
        print(markdown_failures([r for r in evals if "failures" in r]))
    if clips:
        print(("\n" if evals else "") + markdown_clip_table(clips))
    contexts = [r for r in results if "scores" in r and r.get("task") in CONTEXT_TASKS]
    if contexts:
        print(("\n" if evals or clips else "") + markdown_context_table(contexts))
    for r in results:
        if "ratio" in r:
            plain = "plain Kontext (editing)" if r.get("task") == EDIT else "plain backbone"
            size = f"{r['width']}x{r['height']}" + (f"x{r['frames']} frames" if r.get("frames", 1) > 1 else "")
            print(f"\nsampling time MetaCanvas / {plain}: {r['ratio']:.2f}x ({r['steps']} steps, "
                  f"{size}, cfg {r['cfg']}); planner once: {1000 * r['planner_once_s']:.0f} ms; "
                  f"connector FLOPs per step: {100 * r['connector_flops_share']:.1f}% of the DiT's")
            for name, c in r.get("compare", {}).items():
                print(f"sampling time {r['keyframes']} keyframes / {c['keyframes']} ({name}): "
                      f"{c['metacanvas_vs_this']:.2f}x")


def register(sub) -> None:
    tb = sub.add_parser("table", help="Markdown table from evaluate/bench JSON files")
    tb.add_argument("files", type=Path, nargs="+")
    tb.set_defaults(func=run)

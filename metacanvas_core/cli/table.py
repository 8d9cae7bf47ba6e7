"""`table`: Markdown tables from `evaluate` and `bench` JSON files: each task's results in its own table, then the
timings."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MetaCanvasError
from ..tasks import TASKS


def run(args) -> None:
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise MetaCanvasError(f"table: no such result file {', '.join(missing)}; write one with `evaluate --json`")
    results = [json.loads(p.read_text()) for p in args.files]
    by_table: dict = {}  # tasks that share a table (text- and image-to-video) share its rows, in the given order
    for r in results:
        if "scores" in r:
            by_table.setdefault(TASKS[r.get("task", "t2i")].table, []).append(r)  # old files: text-to-image
    print("\n\n".join(table(rows) for table, rows in by_table.items()))
    for r in results:
        if "ratio" in r:
            print("\n" + _timing(r))


def _timing(r: dict) -> str:
    """One `bench` result in words."""
    size = f"{r['width']}x{r['height']}" + (f"x{r['frames']} frames" if r.get("frames", 1) > 1 else "")
    task = TASKS.get(r.get("task", "t2i"))
    plain = f"plain backbone ({task.title})" if task else "plain backbone"
    lines = [f"sampling time MetaCanvas / {plain}: {r['ratio']:.2f}x ({r['steps']} steps, {size}, cfg {r['cfg']}); "
             f"planner once: {1000 * r['planner_once_s']:.0f} ms; connector FLOPs per step: "
             f"{100 * r['connector_flops_share']:.1f}% of the DiT's"]
    lines += [f"sampling time {r['keyframes']} keyframes / {c['keyframes']} ({name}): {c['metacanvas_vs_this']:.2f}x"
              for name, c in r.get("compare", {}).items()]
    return "\n".join(lines)


def register(sub) -> None:
    tb = sub.add_parser("table", help="Markdown table from evaluate/bench JSON files")
    tb.add_argument("files", type=Path, nargs="+")
    tb.set_defaults(func=run)

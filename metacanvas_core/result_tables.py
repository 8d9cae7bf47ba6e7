"""Markdown tables of `evaluate` results, one kind per benchmark: rows are results (methods), columns its scores
(x100); where results differ in how they were sampled, each row says how."""

from __future__ import annotations

from .world.edits import EDIT_KINDS


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


def image_table(results: list[dict]) -> str:
    """Text-to-image results: the scores table, then why the failing images fail."""
    text = _image_scores(results)
    failing = [r for r in results if "failures" in r]
    if failing:
        text += "\n\nWhy images fail (% of each category's prompts):\n\n" + _failures(failing)
    return text


def _image_scores(results: list[dict]) -> str:
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


def _failures(results: list[dict]) -> str:
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


def clip_table(results: list[dict]) -> str:
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



def video_edit_table(results: list[dict]) -> str:
    """Video editing rows: edit_correct, preservation, overall (x100) and overall per edit kind."""
    from .world.clip_edits import CLIP_EDIT_KINDS

    varying = _sampler_varies(results)
    rows = ["| method | edit correct | preservation | overall | " + " | ".join(CLIP_EDIT_KINDS) + " |",
            "|" + "---|" * (len(CLIP_EDIT_KINDS) + 4)]
    for r in results:
        s, kinds = r["scores"], r.get("per_kind", {})
        per = " | ".join(f"{100 * kinds[k]['overall']:.1f}" if k in kinds else "-" for k in CLIP_EDIT_KINDS)
        rows.append(f"| {_method_cell(r, varying)} | {100 * s['edit_correct']:.1f} | "
                    f"{100 * s['preservation']:.1f} | **{100 * s['overall']:.1f}** | {per} |")
    return "Video editing (held-out clip edits; per kind: overall)\n\n" + "\n".join(rows)


def in_context_table(results: list[dict]) -> str:
    """In-context video rows: reference_fidelity, the motion keys and overall (x100)."""
    varying = _sampler_varies(results)
    keys = ("reference_fidelity", *(k for k in _CLIP_COLUMNS if k != "still_objects"), "still_objects")
    names = {"reference_fidelity": "reference fidelity", **_CLIP_COLUMNS}
    rows = ["| method | " + " | ".join(names[k] for k in keys) + " | overall |", "|" + "---|" * (len(keys) + 2)]
    for r in results:
        s = r["scores"]
        cells = " | ".join("-" if k not in s else f"{100 * s[k]:.1f}" for k in keys)
        rows.append(f"| {_method_cell(r, varying)} | {cells} | **{100 * s['overall']:.1f}** |")
    return "In-context video (held-out reference scenes)\n\n" + "\n".join(rows)


def edit_table(results: list[dict]) -> str:
    """One row per edit evaluation: overall (± its standard error), edit_correct and preservation, then
    edit_correct / preservation per edit kind (x100)."""
    kinds = [k for k in EDIT_KINDS if any(k in r["scores"]["per_kind"] for r in results)]
    head = "| method | overall | edit correct | preservation | " + " | ".join(kinds) + " |"
    rows = [head, "|" + "---|" * (len(kinds) + 4)]
    for r in results:
        s, e = r["scores"], r["stderr"]
        per = r["scores"]["per_kind"]
        cells = " | ".join(f"{100 * per[k]['edit_correct']:.0f} / {100 * per[k]['preservation']:.0f}"
                           if k in per else "-" for k in kinds)
        notes = "; ".join(x for x in (
            "training combinations" if r.get("split") == "train" else "",
            f"{r['steps']} steps, CFG {r['cfg']:g}" if "steps" in r else "",
        ) if x)
        rows.append(f"| {r['method']} ({notes}) | **{100 * s['overall']:.1f}** ± {100 * e['overall']:.1f} | "
                    f"{100 * s['edit_correct']:.1f} ± {100 * e['edit_correct']:.1f} | "
                    f"{100 * s['preservation']:.1f} | {cells} |")
    return "\n".join(rows) + "\n\n(per edit kind: edit correct / preservation, x100)"

"""The edit world and its scorer: deterministic triples in the planner's vocabulary, held-out combinations, and a
scorer that passes true targets, fails the unedited source on edit_correct (but not preservation) and fails wrong
edits."""

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from metacanvas_core.world.edit_scorer import cell_mask, grade_edit, score_edits
from metacanvas_core.world.edits import (
    EDIT_KINDS, Edit, edit_benchmark, edit_words, render_pair, sample_edit, sample_edit_batch,
)
from metacanvas_core.world.scorer import detect
from metacanvas_core.world.shapes import COLOURS, SHAPES, Obj, render

TOKENIZER = Path(__file__).resolve().parents[1] / "metacanvas_core" / "assets" / "tiny" / "planner" / "tokenizer.json"


def test_instructions_use_only_words_the_shipped_planner_knows():
    vocab = set(json.loads(TOKENIZER.read_text())["model"]["vocab"])
    assert edit_words() <= vocab
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert set(sample_edit(rng).instruction.split()) <= edit_words()


def test_edits_are_deterministic_and_do_what_they_say():
    assert edit_benchmark(20, seed=3) == edit_benchmark(20, seed=3)
    assert edit_benchmark(20, seed=3) != edit_benchmark(20, seed=4)
    rng = np.random.default_rng(1)
    for kind in EDIT_KINDS:
        for _ in range(50):
            e = sample_edit(rng, kind)
            for objects in (e.source, e.target):
                assert len({o.cell for o in objects}) == len(objects)  # one object per cell
                assert len({(o.colour, o.shape) for o in objects}) == len(objects)  # "the red circle" is one
            s, r = e.subject, e.result
            unchanged = set(e.source) - {s}
            assert unchanged <= set(e.target)
            if kind == "recolour":
                assert (r.shape, r.cell) == (s.shape, s.cell) and r.colour != s.colour
                assert e.instruction == f"make the {s.colour} {s.shape} {r.colour}"
            elif kind == "move":
                assert (r.colour, r.shape) == (s.colour, s.shape) and r.cell not in {o.cell for o in e.source}
            elif kind == "add":
                assert s is None and set(e.target) == set(e.source) | {r}
            elif kind == "remove":
                assert r is None and set(e.target) == unchanged
            else:
                assert (r.colour, r.cell) == (s.colour, s.cell) and r.shape != s.shape
                assert e.instruction == f"turn the {s.colour} {s.shape} into a {r.shape}"


def test_held_out_combinations_never_reach_training():
    rng = np.random.default_rng(2)
    train = {k: [sample_edit(rng, k, "train") for _ in range(300)] for k in EDIT_KINDS}
    held = {k: [sample_edit(rng, k, "heldout") for _ in range(60)] for k in EDIT_KINDS}
    for kind in EDIT_KINDS:
        seen = {e.combination for e in train[kind]}
        assert not any(e.held_out for e in train[kind]) and all(e.held_out for e in held[kind])
        assert not seen & {e.combination for e in held[kind]}
    assert Counter(e.kind for e in edit_benchmark(25)) == Counter({k: 5 for k in EDIT_KINDS})
    with pytest.raises(ValueError, match="split"):
        sample_edit(rng, split="test")


def test_jittered_pairs_are_identical_outside_the_edited_cells():
    rng = np.random.default_rng(3)
    for i in range(40):
        e = sample_edit(rng, EDIT_KINDS[i % 5])
        src, tgt = render_pair(e, 32, rng)
        outside = ~cell_mask(e.edited_cells, 32)
        assert np.array_equal(src[outside], tgt[outside])
        assert not np.array_equal(src, tgt)
    plain = sample_edit(rng)
    assert np.array_equal(render_pair(plain)[0], render(plain.source))
    src, tgt, edits = sample_edit_batch(np.random.default_rng(4), 6)
    assert src.shape == tgt.shape == (6, 3, 32, 32) and src.dtype == np.float32 and -1 <= src.min() <= src.max() <= 1
    again = sample_edit_batch(np.random.default_rng(4), 6)
    assert np.array_equal(src, again[0]) and np.array_equal(tgt, again[1]) and edits == again[2]
    assert not any(e.held_out for e in edits)


def _pairs(n: int, seed: int, jitter: bool = True):
    rng = np.random.default_rng(seed)
    edits = edit_benchmark(n, seed=seed)
    pairs = [render_pair(e, 32, rng if jitter else None) for e in edits]
    return edits, [p[0] for p in pairs], [p[1] for p in pairs]


def test_true_targets_score_near_one_and_the_unedited_source_keeps_everything_but_edits_nothing():
    edits, sources, targets = _pairs(100, seed=5)
    true = score_edits(edits, targets, sources)
    assert true["edit_correct"] >= 0.97 and true["preservation"] >= 0.97 and true["overall"] >= 0.95
    assert set(true["per_kind"]) == set(EDIT_KINDS) and all(v["n"] == 20 for v in true["per_kind"].values())
    unedited = score_edits(edits, sources, sources)
    assert unedited["edit_correct"] <= 0.03 and unedited["preservation"] >= 0.97 and unedited["overall"] <= 0.03
    # Float images in [0, 1] (ComfyUI's IMAGE) grade alike.
    assert grade_edit(edits[0], targets[0] / 255.0, sources[0]) == grade_edit(edits[0], targets[0], sources[0])


def _wrong(edit: Edit, how: str) -> tuple[Obj, ...]:
    """The target of a wrong version of `edit`."""
    s, r = edit.subject, edit.result
    others = [o for o in edit.source if o != s]
    if how == "colour":  # recolour to another colour than asked
        colour = next(c for c in COLOURS if c not in (s.colour, r.colour))
        return tuple(dataclasses.replace(r, colour=colour) if o == s else o for o in edit.source)
    if how == "shape":  # turn into another shape than asked
        shape = next(x for x in SHAPES if x not in (s.shape, r.shape))
        return tuple(dataclasses.replace(r, shape=shape) if o == s else o for o in edit.source)
    if how == "cell":  # move (or add) to another free cell than asked
        free = [c for c in range(9) if c not in {o.cell for o in edit.source} and c != r.cell]
        return tuple(o for o in edit.target if o != r) + (dataclasses.replace(r, cell=free[0]),)
    if how == "object":  # apply the edit to another object than named
        victim = others[0]
        if edit.kind == "remove":
            return tuple(o for o in edit.source if o != victim)
        new = next(c for c in COLOURS if c != victim.colour)
        return tuple(dataclasses.replace(o, colour=new) if o == victim else o for o in edit.source)
    raise ValueError(how)


@pytest.mark.parametrize("kind, how", [
    ("recolour", "colour"), ("recolour", "object"), ("replace", "shape"), ("move", "cell"), ("add", "cell"),
    ("remove", "object"),
])
def test_wrong_edits_fail_edit_correct(kind, how):
    rng = np.random.default_rng(7)
    edits, outputs, sources = [], [], []
    while len(edits) < 12:
        e = sample_edit(rng, kind)
        if how == "object" and len(e.source) < 2:
            continue
        edits.append(e)
        sources.append(render(e.source))
        outputs.append(render(_wrong(e, how)))
    scores = score_edits(edits, outputs, sources)
    assert scores["edit_correct"] == 0.0
    if how in ("object", "cell"):  # another object changed, or one appeared outside the edit: not preserved either
        assert scores["preservation"] == 0.0
    else:
        assert scores["preservation"] >= 0.97


def test_preservation_sees_pixels_and_objects_outside_the_edit():
    e = next(x for x in edit_benchmark(50, seed=9) if x.kind == "recolour" and len(x.source) >= 2)
    src, tgt = render(e.source), render(e.target)
    assert grade_edit(e, tgt, src)["overall"] == 1.0
    noisy = tgt.copy()
    noisy[cell_mask(set(range(9)) - e.edited_cells, 32)] = 255  # everything outside the edit painted white
    graded = grade_edit(e, noisy, src)
    assert graded["preservation"] == 0.0 and graded["pixel_similarity"] == 0.0
    assert len(detect(tgt)) == len(e.target)

"""The clip-edit and reference-to-video world and their scorer: deterministic, in the planner's vocabulary, held-out
combinations following the clip world's split, ground truth graded near 1 and wrong clips low on the right keys."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from metacanvas_core.world import clips
from metacanvas_core.world.clip_edit_scorer import (
    grade_clip_edit, grade_reference_clip, score_clip_edits, score_reference_clips,
)
from metacanvas_core.world.clip_edits import (
    CLIP_EDIT_KINDS, REFERENCE_SIZES, clip_edit_benchmark, clip_edit_words, reference_benchmark, render_clip_edit,
    render_references, sample_clip_edit, sample_clip_edit_batch, sample_reference_batch, sample_reference_scene,
)
from metacanvas_core.world.clips import Motion, is_held_out, render_clip
from metacanvas_core.world.edit_scorer import cell_mask
from metacanvas_core.world.scorer import detect

TOKENIZER = Path(__file__).resolve().parents[1] / "metacanvas_core" / "assets" / "tiny" / "planner" / "tokenizer.json"
F = 9  # frames: enough for motion, fast to score


def _edits(seed=0, per_kind=3, split="train"):
    rng = np.random.default_rng(seed)
    return [sample_clip_edit(rng, k, split) for k in CLIP_EDIT_KINDS for _ in range(per_kind)]


def test_words_are_the_shipped_tokenizers_and_edits_mean_what_they_say():
    vocab = set(json.loads(TOKENIZER.read_text())["model"]["vocab"])
    assert clip_edit_words() <= vocab
    rng = np.random.default_rng(3)
    for _ in range(60):
        e, r = sample_clip_edit(rng), sample_reference_scene(rng)
        assert set(e.instruction.split()) <= clip_edit_words() and set(r.prompt.split()) <= clip_edit_words()
        m, src, tgt = e.source.moving[0], e.source, e.target
        if e.kind == "recolour":
            assert tgt.moving[0] == dataclasses.replace(m, colour=e.result.colour) and e.result.colour != m.colour
            assert e.result.colour not in {o.colour for o in src.still} and tgt.still == src.still
        elif e.kind == "replace":
            assert tgt.moving[0] == dataclasses.replace(m, shape=e.result.shape) and e.result.shape != m.shape
        elif e.kind == "direction":
            assert (tgt.moving[0].start, tgt.moving[0].end) != (m.start, m.end) and tgt.still == src.still
            assert all(tgt.moving[0].clearance(o.cell) >= 0.99 for o in tgt.still)
        elif e.kind == "remove":
            assert len(tgt.moving) + len(tgt.still) == 1 and e.subject in (*src.moving, *src.still)
        else:
            assert tgt.moving == src.moving and tgt.still == (e.result,) and m.clearance(e.result.cell) >= 0.99
    assert sample_clip_edit(np.random.default_rng(9)) == sample_clip_edit(np.random.default_rng(9))
    assert clip_edit_benchmark(10) == clip_edit_benchmark(10)
    assert [e.kind for e in clip_edit_benchmark(5)] == list(CLIP_EDIT_KINDS)


def test_held_out_follows_the_clip_worlds_split():
    for e in _edits(1, 6):
        assert not e.held_out and not is_held_out(e.source.moving, e.source.still)
    for e in clip_edit_benchmark(20):
        assert e.held_out and is_held_out(e.target.moving, e.target.still)
    assert all(r.held_out for r in reference_benchmark(6))
    rng = np.random.default_rng(2)
    assert not any(sample_reference_scene(rng).held_out for _ in range(20))
    assert [len(r.references) for r in reference_benchmark(4)] == [1, 2, 1, 2]


def test_rendering_is_the_clip_worlds_and_leaves_the_unedited_alone():
    for e in _edits(2, 2):
        src, tgt = render_clip_edit(e, F)
        assert np.array_equal(src, render_clip(e.source, F)) and np.array_equal(tgt, render_clip(e.target, F))
        src, tgt = render_clip_edit(e, F, rng=np.random.default_rng(5))  # jittered alike in both clips
        assert np.array_equal((src, tgt), render_clip_edit(e, F, rng=np.random.default_rng(5)))
        if e.kind in ("add", "remove"):
            gone = e.result if e.kind == "add" else e.subject
            if not isinstance(gone, Motion):  # a still object: every other pixel is the same
                keep = ~cell_mask({gone.cell}, clips.SIZE)
                assert np.array_equal(src[:, keep], tgt[:, keep])


def test_references_show_their_objects_alone():
    rng = np.random.default_rng(4)
    for _ in range(6):
        r = sample_reference_scene(rng)
        assert r.reference_size in REFERENCE_SIZES
        images = render_references(r, rng)
        assert len(images) == len(r.references) == len(r.scene.moving) + len(r.scene.still)
        for img, o in zip(images, r.references):
            assert img.shape == (r.reference_size, r.reference_size, 3)
            assert [(d.colour, d.shape) for d in detect(img)] == [(o.colour, o.shape)]


@pytest.mark.parametrize("size", [64, 32])
def test_ground_truth_edits_score_one(size):
    edits = _edits(3, 2, "heldout")
    rng = np.random.default_rng(0)
    pairs = [render_clip_edit(e, F, size, rng) for e in edits]
    s = score_clip_edits(edits, [t for _, t in pairs], [s for s, _ in pairs])
    assert s["overall"] == s["edit_correct"] == s["preservation"] == 1.0
    assert set(s["per_kind"]) == set(CLIP_EDIT_KINDS) and all(v["n"] == 2 for v in s["per_kind"].values())


def test_wrong_edits_score_low_on_the_right_keys():
    edits = _edits(4, 2)
    pairs = [render_clip_edit(e, F) for e in edits]
    # Nothing edited: the edit is missed (a new path may cross the old one for a frame), the rest is intact.
    unedited = score_clip_edits(edits, [s for s, _ in pairs], [s for s, _ in pairs])
    assert unedited["edit_correct"] < 0.2 and unedited["preservation"] == 1.0
    assert all(v["edit_correct"] == 0 for k, v in unedited["per_kind"].items() if k != "direction")
    for e, (src, tgt) in zip(edits, pairs):
        # The edit made, but a kept object dropped (where there is one): preservation 0, the edit still right.
        kept = [o for o in (*e.target.moving, *e.target.still) if o is not e.result]
        if kept:
            rest = tuple(o for o in (*e.target.moving, *e.target.still) if o is not kept[0])
            moving = tuple(o for o in rest if isinstance(o, Motion))
            still = tuple(o for o in rest if not isinstance(o, Motion))
            broken = render_clip(clips.ClipScene(moving, still, "", ""), F)
            g = grade_clip_edit(e, broken, src)
            assert g["preservation"] == 0.0 and g["edit_correct"] == 1.0, (e, g)
        # A black clip: a removal is made (and all else lost); every other edit is missed.
        black = grade_clip_edit(e, np.zeros_like(tgt), src)
        assert black["edit_correct"] == float(e.kind == "remove") and black["preservation"] == (0.0 if kept else 1.0)
    with pytest.raises(ValueError, match="differ"):
        grade_clip_edit(edits[0], pairs[0][1][:, :16, :16], pairs[0][0])


def test_reference_clips_score_fidelity_and_motion():
    refs = reference_benchmark(4)
    truth = [render_clip(r.scene, F, rng=np.random.default_rng(i)) for i, r in enumerate(refs)]
    s = score_reference_clips(refs, truth)
    assert s["overall"] == s["reference_fidelity"] == s["motion_direction"] == 1.0 and s["still_objects"] == 1.0
    for r, clip in zip(refs, truth):
        m = r.scene.moving[0]
        other = next(c for c in clips.COLOURS if c not in {o.colour for o in r.references})
        recoloured = dataclasses.replace(r.scene, moving=(dataclasses.replace(m, colour=other),))
        reshaped = dataclasses.replace(
            r.scene, moving=(dataclasses.replace(m, shape=next(s for s in clips.SHAPES if s != m.shape)),))
        backwards = dataclasses.replace(r.scene, moving=(Motion(m.colour, m.shape, m.end, m.start),))
        assert grade_reference_clip(r, render_clip(recoloured, F))["reference_fidelity"] == 0.0
        assert grade_reference_clip(r, render_clip(reshaped, F))["reference_fidelity"] == 0.0
        g = grade_reference_clip(r, render_clip(backwards, F))
        assert g["reference_fidelity"] == 1.0 and g["motion_direction"] == 0.0 and g["overall"] < 1.0


def test_training_batches_are_deterministic_and_in_the_vae_layout():
    src, tgt, edits = sample_clip_edit_batch(np.random.default_rng(6), 3, frames=F)
    assert src.shape == tgt.shape == (3, 3, F, 32, 32) and src.min() >= -1 and src.max() <= 1
    again = sample_clip_edit_batch(np.random.default_rng(6), 3, frames=F)
    assert np.array_equal(src, again[0]) and edits == again[2] and not any(e.held_out for e in edits)
    # Back in (F, H, W, 3) uint8, every clip of the batch grades as ground truth: the layout is the one asked for.
    def frames(x):
        return ((x.transpose(1, 2, 3, 0) + 1) * 127.5 + 0.5).astype(np.uint8)

    assert score_clip_edits(edits, [frames(x) for x in tgt], [frames(x) for x in src])["overall"] == 1.0
    refs, clips_, scenes = sample_reference_batch(np.random.default_rng(7), 4, frames=F)
    assert clips_.shape == (4, 3, F, 32, 32) and [len(r) for r in refs] == [len(s.references) for s in scenes]
    assert score_reference_clips(scenes, [frames(x) for x in clips_])["overall"] == 1.0
    assert all(img.shape == (s.reference_size,) * 2 + (3,) for r, s in zip(refs, scenes) for img in r)

"""The clip world (deterministic motion clips, held-out combinations) and the clip scorer."""

import numpy as np
import pytest

from metacanvas_core.builtin import PLANNER
from metacanvas_core.planner import Planner
from metacanvas_core.world import clips
from metacanvas_core.world.clip_scorer import PASS_KEYS, grade_clip, score_clips
from metacanvas_core.world.clips import ClipScene, Motion
from metacanvas_core.world.scorer import detect
from metacanvas_core.world.shapes import Obj, vocabulary


def test_clips_are_deterministic_with_the_asked_size_and_first_frame():
    a = clips.benchmark_clips(6, seed=5)
    assert [s.caption for s in a] == [s.caption for s in clips.benchmark_clips(6, seed=5)]
    clip = clips.render_clip(a[0], rng=np.random.default_rng(1))
    assert clip.shape == (17, 32, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, clips.render_clip(a[0], rng=np.random.default_rng(1)))
    assert np.array_equal(clips.start_image(a[0], rng=np.random.default_rng(1)), clip[0])
    batch, scenes = clips.sample_clip_batch(np.random.default_rng(0), 3)
    assert batch.shape == (3, 3, 17, 32, 32) and batch.min() >= -1 and batch.max() <= 1 and len(scenes) == 3
    with pytest.raises(ValueError, match="at least 2 frames"):
        clips.render_clip(a[0], frames=1)


def test_captions_use_only_words_the_shipped_planner_knows():
    rng = np.random.default_rng(0)
    scenes = [clips.sample_clip(rng, split=split) for split in ("train", "heldout") for _ in range(300)]
    words = {w for s in scenes for w in s.caption.split()}
    assert words <= set(vocabulary())
    Planner.from_pretrained(PLANNER).tokenize([s.caption for s in scenes])  # raises on an unknown word
    assert "a red circle moves from left to right" == clips.caption((Motion("red", "circle", 3, 5),), ())
    assert clips.caption((Motion("blue", "square", 1, 7),), (Obj("yellow", "square", 0),)) == \
        "a blue square moves from top to bottom and a yellow square at top left"


def test_held_out_combinations_never_appear_in_training():
    rng = np.random.default_rng(1)
    train = {clips.sample_clip(rng).caption for _ in range(3000)}
    held = [clips.sample_clip(rng, split="heldout") for _ in range(500)]
    assert not train & {s.caption for s in held}
    assert all(clips.is_held_out(s.moving, s.still) for s in held)
    share = np.mean([clips.motion_held_out(Motion(c, s, a, b)) for c in ("red", "green", "blue", "yellow")
                     for s in ("circle", "square", "triangle") for a, b in clips.MOTIONS])
    assert 0.15 < share < 0.35


def test_movers_cross_the_grid_and_still_objects_stay_off_their_path():
    rng = np.random.default_rng(2)
    for _ in range(40):
        scene = clips.sample_clip(rng, "motion_still")
        m, o = scene.moving[0], scene.still[0]
        assert m.colour != o.colour and m.clearance(o.cell) >= 0.99
        clip = clips.render_clip(scene, rng=rng)
        first, last = ({(d.colour, d.shape, d.cell) for d in detect(f)} for f in (clip[0], clip[-1]))
        assert first == {(m.colour, m.shape, m.start), (o.colour, o.shape, o.cell)}
        assert last == {(m.colour, m.shape, m.end), (o.colour, o.shape, o.cell)}


@pytest.fixture(scope="module")
def bench():
    scenes = clips.benchmark_clips(8, seed=7)
    rng = np.random.default_rng(3)
    return scenes, [clips.render_clip(s, rng=rng) for s in scenes]


def test_rendered_ground_truth_scores_full_marks(bench):
    scenes, truth = bench
    scores = score_clips(scenes, truth)
    assert set(scores) == {*PASS_KEYS, "overall", "flicker"}
    assert all(scores[k] == 1.0 for k in (*PASS_KEYS, "overall")), scores
    assert scores["flicker"] == 0.0
    # ComfyUI's float frames grade alike.
    assert score_clips(scenes[:2], [c / 255.0 for c in truth[:2]]) == score_clips(scenes[:2], truth[:2])


def _replace(scene, **motion):
    m = scene.moving[0]
    moved = Motion(**{**dict(colour=m.colour, shape=m.shape, start=m.start, end=m.end), **motion})
    return ClipScene((moved,), scene.still, scene.caption, scene.category)


def test_wrong_clips_score_low_on_the_right_keys(bench):
    scenes, truth = bench
    rng = np.random.default_rng(4)
    reversed_ = [clips.render_clip(_replace(s, start=s.moving[0].end, end=s.moving[0].start)) for s in scenes]
    r = score_clips(scenes, reversed_)
    assert r["motion_direction"] == r["start_cell"] == r["end_cell"] == 0.0 and r["colour_constant"] == 1.0

    static = [np.repeat(c[:1], len(c), axis=0) for c in truth]
    s = score_clips(scenes, static)
    assert s["motion_direction"] == s["end_cell"] == 0.0 and s["start_cell"] == 1.0 and s["still_objects"] == 1.0

    def recolour(scene):
        other = next(c for c in ("red", "green", "blue", "yellow")
                     if c != scene.moving[0].colour and all(c != o.colour for o in scene.still))
        return clips.render_clip(_replace(scene, colour=other))
    w = score_clips(scenes, [recolour(sc) for sc in scenes])
    assert w["colour_constant"] == w["motion_direction"] == 0.0 and w["still_objects"] == 1.0

    def reshape_half(scene):  # the mover turns into another shape half way
        shape = "square" if scene.moving[0].shape != "square" else "circle"
        other = clips.render_clip(_replace(scene, shape=shape))
        # Both halves without jitter: at 32 px a mover crossing one cell advances 2/3 px a frame, so another pixel
        # of jitter from frame 8 on could step it back a cell, failing motion_direction for the wrong reason.
        return np.concatenate([clips.render_clip(scene)[:8], other[8:]])
    h = score_clips(scenes, [reshape_half(sc) for sc in scenes])
    assert h["shape_constant"] == 0.0 and h["motion_direction"] == 1.0 and h["colour_constant"] == 1.0

    noisy = [np.clip(c.astype(int) + rng.integers(-60, 61, c.shape), 0, 255).astype(np.uint8) for c in truth[:4]]
    assert score_clips(scenes[:4], noisy)["flicker"] > 0.05  # frame-to-frame noise, objects still detectable

    def blink(clip):  # every other frame loses everything but the mover's pixels: a flickering background
        out = clip.copy()
        out[1::2] = np.where((clip[1::2] == clip[0]).all(-1, keepdims=True), 0, clip[1::2])
        return out
    b = score_clips(scenes, [blink(c) for c in truth])
    assert b["flicker"] > 0.005 and b["still_objects"] == 0.0


def test_a_still_object_that_moves_fails_still_objects_only():
    scene = ClipScene((Motion("red", "circle", 3, 5),), (Obj("blue", "square", 0),),
                      "a red circle moves from left to right and a blue square at top left", "motion_still")
    clip = clips.render_clip(scene)
    drifting = clips.render_clip(ClipScene(scene.moving + (Motion("blue", "square", 0, 2),), (), "", "motion"))
    g, d = grade_clip(scene, clip), grade_clip(scene, drifting)
    assert g["still_objects"] == 1.0 and d["still_objects"] == 0.0
    assert d["motion_direction"] == d["start_cell"] == d["end_cell"] == 1.0
    assert grade_clip(ClipScene(scene.moving, (), "", "motion"), clip)["still_objects"] is None


def test_a_mover_that_steps_back_or_sideways_fails_direction_but_keeps_its_cells():
    scene = ClipScene((Motion("red", "circle", 3, 5),), (), "a red circle moves from left to right", "motion")

    def part(a, b):
        return clips.render_clip(ClipScene((Motion("red", "circle", a, b),), (), "", "motion"), 5)

    wobble = np.concatenate([part(3, 4), part(4, 3), part(3, 5)])  # right, back left, then right to the end
    detour = np.concatenate([part(3, 1), part(1, 5)])  # up to the top row, then down to the right
    for clip in (wobble, detour):
        g = grade_clip(scene, clip)
        assert g["motion_direction"] == 0.0 and g["start_cell"] == g["end_cell"] == 1.0
    assert grade_clip(scene, np.concatenate([part(3, 4), part(4, 5)]))["motion_direction"] == 1.0

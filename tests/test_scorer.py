"""The shapes-world detector: true renders score near 1, mismatched images score low."""

import numpy as np

from metacanvas_core.world import shapes
from metacanvas_core.world.scorer import (
    detect, failure, failure_shares, layout_score, position_score, score_detections,
)


def score_images(scenes, images):
    return score_detections(scenes, [detect(i) for i in images])


def test_true_images_score_near_one_and_mismatched_low():
    rng = np.random.default_rng(0)
    scenes = shapes.benchmark_prompts(240)
    images = [shapes.render(s.objects, 32, rng) for s in scenes]
    true = score_images(scenes, images)
    assert true["overall"] >= 0.95 and min(true.values()) >= 0.9
    shuffled = score_images(scenes, images[7:] + images[:7])
    assert shuffled["overall"] <= 0.2
    assert score_images(scenes, [np.zeros((32, 32, 3), np.uint8)] * len(scenes))["overall"] == 0.0
    assert position_score(scenes, [detect(i) for i in images]) >= 0.95


def test_detects_colour_shape_and_cell_from_float_images():
    objs = (shapes.Obj("red", "circle", 0), shapes.Obj("blue", "square", 8), shapes.Obj("yellow", "triangle", 4))
    image = shapes.render(objs, 32).astype(np.float32) / 255.0  # ComfyUI IMAGE layout
    found = {(d.colour, d.shape, d.cell) for d in detect(image)}
    assert found == {(o.colour, o.shape, o.cell) for o in objs}


def test_fill_tells_true_squares_circles_and_triangles_apart():
    rng = np.random.default_rng(0)
    fills = {sh: [d.fill for c in range(9) for d in detect(shapes.render((shapes.Obj("green", sh, c),), 32, rng))]
             for sh in shapes.SHAPES}
    assert all(len(v) == 9 for v in fills.values())
    assert min(fills["square"]) == 1.0
    assert 0.65 <= min(fills["circle"]) and max(fills["circle"]) < 0.9
    assert max(fills["triangle"]) < 0.65


def test_benchmark_prompts_are_held_out_of_training():
    bench = shapes.benchmark_prompts(300)
    keys = {shapes.combination_key(s.category, s.objects) for s in bench} - {None}
    rng = np.random.default_rng(1)
    train = [shapes.sample_scene(rng) for _ in range(5000)]
    assert keys and not any(shapes.combination_key(s.category, s.objects) in keys for s in train)
    assert all(shapes.is_held_out(s.category, s.objects) for s in bench if s.category == "position")
    seen = shapes.benchmark_prompts(300, split="train")  # the memorisation check: only trained combinations
    assert [s.category for s in seen] == [s.category for s in bench]
    assert not any(shapes.is_held_out(s.category, s.objects) for s in seen)


def test_failures_name_the_first_broken_requirement():
    red_circle, blue_square = shapes.Obj("red", "circle", 0), shapes.Obj("blue", "square", 8)
    scene = shapes.Scene((red_circle, blue_square), "a red circle at top left and a blue square at bottom right",
                         "position")

    def why(*objs):
        return failure(scene, detect(shapes.render(objs, 32)))

    assert why(red_circle, blue_square) is None
    assert why(red_circle) == "count"
    assert why(red_circle, shapes.Obj("blue", "triangle", 8)) == "shape"
    assert why(red_circle, shapes.Obj("blue", "circle", 8)) == "repeated shape"  # one shape drawn for both
    assert why(red_circle, shapes.Obj("green", "square", 8)) == "colour"
    assert why(shapes.Obj("blue", "circle", 0), shapes.Obj("red", "square", 8)) == "binding"
    assert why(shapes.Obj("red", "circle", 4), blue_square) == "cell"
    two_circles = shapes.Scene((shapes.Obj("red", "circle", 0), shapes.Obj("red", "circle", 8)), "two red circles",
                               "counting")
    squares = (shapes.Obj("red", "square", 0), shapes.Obj("red", "square", 8))
    assert failure(two_circles, detect(shapes.render(squares, 32))) == "shape"  # one shape was asked for
    blank = [np.zeros((32, 32, 3), np.uint8)] * 2
    assert failure_shares([scene, scene], [detect(i) for i in blank])["position"] == {
        "count": 1.0, "repeated shape": 0.0, "shape": 0.0, "colour": 0.0, "binding": 0.0, "cell": 0.0}


def test_layout_score_counts_cells_only():
    scenes = [s for s in shapes.benchmark_prompts(120) if s.category == "position"]
    recoloured = [tuple(shapes.Obj("blue" if o.colour != "blue" else "red", "square", o.cell) for o in s.objects)
                  for s in scenes]
    moved = [tuple(shapes.Obj(o.colour, o.shape, (o.cell + 1) % 9) for o in s.objects) for s in scenes]

    def score(objects):
        return layout_score(scenes, [detect(shapes.render(objs, 32)) for objs in objects])

    assert score([s.objects for s in scenes]) == 1.0
    assert score(recoloured) >= 0.95  # wrong colour and shape, right cells
    assert score(moved) == 0.0
    assert layout_score([], []) is None

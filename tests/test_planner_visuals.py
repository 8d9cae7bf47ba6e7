"""The planner sees images and clips through Qwen2.5-VL's own vision tower, laid out and numbered as the model does."""

import numpy as np
import pytest
import torch
from PIL import Image

from metacanvas_core.canvas_grid import CanvasGrid
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.planner import Planner
from metacanvas_core.training.tasks.planner import build_batch, example
from metacanvas_core.visual_inputs import Video, prepare_visuals, video_patches
from metacanvas_core.world import shapes
from metacanvas_core.world.tiny_models import image_processor


@pytest.fixture(scope="module")
def planner(random_planner_dir):
    return Planner.from_pretrained(random_planner_dir)


def _scene(cells, size=32):
    objs = tuple(shapes.Obj(c, s, k) for c, s, k in cells)
    return shapes.render(objs, size)


def _reference_ids(planner, prompt, visual_tokens):
    """The sequence Qwen2.5-VL's chat template gives: each visual's placeholders, then the prompt, then <eos>."""
    cfg, tok = planner.model.config, planner.tokenizer
    ids, types = [], []
    for kind, n in visual_tokens:
        pad = cfg.image_token_id if kind == 1 else cfg.video_token_id
        ids += [cfg.vision_start_token_id] + [pad] * n + [cfg.vision_end_token_id]
        types += [0] + [kind] * n + [0]
    text = tok(prompt, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return torch.tensor([ids + text]), torch.tensor([types + [0] * len(text)])


def test_preprocessing_is_the_one_the_planner_was_trained_with(planner):
    img = _scene([("red", "circle", 0), ("blue", "square", 8)])
    seen = prepare_visuals(planner.image_processor, planner.model.config, [[img]])
    trained = image_processor()(images=[img], return_tensors="pt")
    assert torch.equal(seen.pixel_values, trained["pixel_values"])
    assert torch.equal(seen.image_grid_thw, trained["image_grid_thw"])
    # ComfyUI's float IMAGE in [0, 1] rounds to the same pixels.
    again = prepare_visuals(planner.image_processor, planner.model.config, [[torch.from_numpy(img) / 255.0]])
    assert torch.equal(again.pixel_values, seen.pixel_values)
    # The planner's training batches put 16 placeholders per 32x32 image, as encode does.
    examples = [example(np.random.default_rng([0, i])) for i in range(8)]
    batch = build_batch(planner.tokenizer, image_processor(), examples)
    pads = (batch["input_ids"] == planner.model.config.image_token_id).sum()
    assert pads == 16 * len(batch["image_grid_thw"])
    assert seen.prefixes[0].count(planner.model.config.image_token_id) == 16


def test_image_prompts_match_the_models_own_forward(planner):
    """Hidden states of encode == Qwen2.5-VL's forward with input_ids + pixel_values + image_grid_thw (its own
    vision tower, placeholder scatter and get_rope_index), per prompt, in a batch of different image sizes."""
    a = _scene([("red", "circle", 0)], 32)
    b = _scene([("green", "triangle", 4)], 32)[:, :24]  # 32x24: another size, within the planner's pixel limit
    c = _scene([("yellow", "square", 2)], 32)
    prompts = ["where is the red circle ?", "describe"]
    out = planner.encode(prompts, visuals=[[a], [b, c]])
    proc = image_processor()
    for i, (prompt, imgs) in enumerate(zip(prompts, [[a], [b, c]])):
        vis = proc(images=imgs, return_tensors="pt")
        counts = (vis["image_grid_thw"].prod(-1) // 4).tolist()
        ids, types = _reference_ids(planner, prompt, [(1, n) for n in counts])
        ref = planner.model.model(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=vis["pixel_values"],
            image_grid_thw=vis["image_grid_thw"], mm_token_type_ids=types,
        ).last_hidden_state[0]
        n = ids.shape[1]
        assert int(out.text_mask[i].sum()) == n
        torch.testing.assert_close(out.text_states[i, :n], ref, atol=1e-5, rtol=1e-5)
    assert counts == [(32 // 8) * (24 // 8), 16]


def _video(n=5, size=32):
    frames = []
    for j in range(n):  # a red circle crossing the middle row, a blue square still
        img = shapes.render((shapes.Obj("blue", "square", 0),), size)
        mover = shapes.render((shapes.Obj("red", "circle", 3),), size)
        shift = round(j * (2 * size / 3) / (n - 1))
        mover = np.roll(mover, shift, axis=1)
        frames.append(np.where(mover.any(-1, keepdims=True), mover, img))
    return np.stack(frames)


def test_video_patches_follow_qwens_video_layout():
    proc = image_processor()
    frames = _video(5)
    patches, grid = video_patches(proc, frames)
    assert grid == [3, 8, 8]  # 5 frames -> 3 temporal patches (the last frame repeated), 32 px / patch 4
    # Qwen2VLVideoProcessor.patchify, transcribed (it needs torchvision to import): normalised frames, the last
    # repeated to a multiple of temporal_patch_size, then its view/permute.
    mean, std = np.array(proc.image_mean), np.array(proc.image_std)
    x = ((frames / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.concatenate([x, x[-1:]]))[None]
    b, t, c, h, w = x.shape
    x = x.view(b, t // 2, 2, c, h // 8, 2, 4, w // 8, 2, 4).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    torch.testing.assert_close(torch.from_numpy(patches), x.reshape(-1, c * 2 * 16), atol=1e-5, rtol=1e-5)
    # Frames that come in identical pairs patchify like the images of one frame per pair.
    pairs = np.repeat(frames[::2], 2, axis=0)
    still = proc(images=list(frames[::2]), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(video_patches(proc, pairs)[0], still, atol=1e-6)


@pytest.mark.parametrize("fps", [8.0, 24.0])
def test_video_prompts_match_the_models_own_forward(planner, fps):
    frames = _video(6)
    out = planner.encode(["a red circle moves from left to right"], visuals=[[Video(frames, fps)]])
    patches, grid = video_patches(image_processor(), frames)
    n = grid[0] * grid[1] * grid[2] // 4
    ids, types = _reference_ids(planner, "a red circle moves from left to right", [(2, n)])
    ref = planner.model.model(
        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=torch.from_numpy(patches),
        video_grid_thw=torch.tensor([grid]), second_per_grid_ts=torch.tensor([2 / fps]), mm_token_type_ids=types,
    ).last_hidden_state[0]
    torch.testing.assert_close(out.text_states[0], ref, atol=1e-5, rtol=1e-5)
    # ComfyUI's float frames (an IMAGE batch) are the same clip.
    floats = Video(torch.from_numpy(frames) / 255, fps)
    again = planner.encode(["a red circle moves from left to right"], visuals=[[floats]])
    assert torch.equal(again.text_states, out.text_states)


def _positions_seen(planner, *args, **kwargs):
    seen = {}
    hook = planner.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.update(pos=kw["position_ids"].clone()), with_kwargs=True
    )
    try:
        planner.encode(*args, **kwargs)
    finally:
        hook.remove()
    return seen["pos"]


@pytest.mark.parametrize("grid", [CanvasGrid(1, 3, 4), CanvasGrid(3, 2, 3, keyframe_seconds=1.0),
                                  CanvasGrid(3, 2, 2, keyframe_seconds=2.5)])
def test_canvas_after_visuals_is_numbered_as_qwen_numbers_a_grid_there(planner, grid):
    """The whole sequence [image][prompt][canvas] gets the positions get_rope_index gives when the canvas is an
    image (k=1) or a video of k temporal patches, `keyframe_seconds` apart, in its place."""
    img = _scene([("red", "circle", 0)])
    tokens = torch.zeros(grid.num_tokens, planner.hidden_size)
    pos = _positions_seen(planner, ["describe"], tokens, grid, visuals=[[img]])
    ids, types = _reference_ids(planner, "describe", [(1, 16)])
    cfg = planner.model.config
    kind = 1 if grid.frames == 1 else 2
    canvas_id = cfg.image_token_id if kind == 1 else cfg.video_token_id
    ids = torch.cat([ids, torch.full((1, grid.num_tokens), canvas_id)], 1)
    types = torch.cat([types, torch.full((1, grid.num_tokens), kind)], 1)
    canvas_thw = torch.tensor([[grid.frames, grid.height * 2, grid.width * 2]])
    grids = dict(image_grid_thw=torch.cat([torch.tensor([[1, 8, 8]]), canvas_thw]) if kind == 1 else
                 torch.tensor([[1, 8, 8]]))
    if kind == 2:
        grids.update(video_grid_thw=canvas_thw, second_per_grid_ts=torch.tensor([grid.keyframe_seconds]))
    ref, _ = planner.model.model.get_rope_index(ids, types, **grids)
    assert torch.equal(pos, ref)


def test_batched_prompts_with_visuals_plan_like_each_alone(planner):
    grid = CanvasGrid(3, 2, 2)
    tokens = torch.randn(grid.num_tokens, planner.hidden_size) * 0.02
    a, b = _scene([("red", "circle", 0)]), _scene([("blue", "square", 5)], 40)
    prompts = ["a red circle moves from top left to bottom right", "describe", "a green triangle"]
    visuals = [[a], [Video(_video(4), 8), b], []]
    both = planner.encode(prompts, tokens, grid, visuals=visuals)
    for i, (p, v) in enumerate(zip(prompts, visuals)):
        alone = planner.encode([p], tokens, grid, visuals=[v])
        n = alone.text_states.shape[1]
        torch.testing.assert_close(both.canvas_states[i], alone.canvas_states[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both.text_states[i, :n], alone.text_states[0], atol=1e-5, rtol=1e-5)
        assert both.text_mask[i].sum() == n and both.text_states[i, n:].abs().sum() == 0
    # No visuals at all is the text-only path.
    plain = planner.encode(["a green triangle"], tokens, grid)
    torch.testing.assert_close(both.canvas_states[2], plain.canvas_states[0], atol=1e-5, rtol=1e-5)


def test_what_the_planner_sees_changes_the_plan(planner):
    grid = CanvasGrid(1, 2, 2)
    tokens = torch.randn(grid.num_tokens, planner.hidden_size) * 0.02
    a = planner.encode(["describe"], tokens, grid, visuals=[[_scene([("red", "circle", 0)])]]).canvas_states
    b = planner.encode(["describe"], tokens, grid, visuals=[[_scene([("red", "circle", 8)])]]).canvas_states
    assert not torch.allclose(a, b)


def test_bad_visuals_are_clear_errors(planner, random_planner_dir, tmp_path):
    img = _scene([("red", "circle", 0)])
    cases = [
        ([[img.astype(np.float32) * np.nan]], "NaN"),
        ([[np.concatenate([img, np.full_like(img[..., :1], 255)], -1)]], "alpha channel"),
        ([[Image.fromarray(img).convert("RGBA")]], "alpha channel"),
        ([[img.astype(np.float32)]], r"\[0, 1\]"),
        ([[np.stack([img, img])]], "list of images"),
        ([[img[:0]]], "empty"),
        ([[Video(img[None][:0], 8)]], "no frames"),
        ([[Video(_video(3), 0)]], "frame rate"),
        ([[Video(_video(3), None)]], "frame rate"),
        ([[np.zeros((2, 600, 3), np.uint8)]], "crop or pad"),
        ([[img], [img]], "each of the 1 prompts"),
    ]
    for visuals, match in cases:
        with pytest.raises(MetaCanvasError, match=match):
            planner.encode(["describe"], visuals=visuals)
    with pytest.raises(MetaCanvasError, match="no prompts"):
        planner.encode([], visuals=[])
    blind = Planner(planner.model, planner.tokenizer, "blind")
    with pytest.raises(MetaCanvasError, match="preprocessor_config.json"):
        blind.encode(["describe"], visuals=[[img]])
    # Any size the processor can take is resized to a multiple of 8 within the tiny planner's 32x32 pixel count:
    # 30x45 -> 24x32 -> 3x4 merged tokens.
    out = planner.encode(["describe"], visuals=[[np.zeros((30, 45, 3), np.uint8)]])
    assert out.text_states.shape[1] == 1 + 12 + 1 + 2


def test_make_plan_sees_the_image_with_the_shipped_weights():
    from metacanvas_core.builtin import PLANNER, T2I_MODELS
    from metacanvas_core.checkpoints import load_connector
    from metacanvas_core.plan import make_plan

    shipped = Planner.from_pretrained(PLANNER)
    loaded = load_connector(T2I_MODELS.shipped()["metacanvas"][1])
    prompt = ["a red circle at top left"]
    plain = make_plan(shipped, loaded, prompt, with_unconditional=True)
    left = make_plan(shipped, loaded, prompt, visuals=[[_scene([("red", "circle", 0)])]], with_unconditional=True)
    right = make_plan(shipped, loaded, prompt, visuals=[[_scene([("red", "circle", 8)])]])
    assert left.canvas.shape == plain.canvas.shape == (1, 1, 8, 8, loaded.config.dit_dim)
    assert left.text.shape[1] == plain.text.shape[1] + 18  # <|vision_start|>, 16 image tokens, <|vision_end|>
    assert not torch.allclose(left.canvas, right.canvas) and not torch.allclose(left.canvas, plain.canvas)
    # The unconditional plan is the empty prompt without the image, whatever the positive saw.
    assert torch.equal(left.unconditional.text, plain.unconditional.text)
    assert torch.equal(make_plan(shipped, loaded, prompt, visuals=[[]]).canvas, plain.canvas)

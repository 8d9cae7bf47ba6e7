"""The trainers that made the shipped weights, for a few steps: they run, resume exactly, and write loadable files."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metacanvas_core.backbones import load_backbone
from metacanvas_core.builtin import ASSETS, PLANNER, SANA_T2I
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.pipeline import MetaCanvasPipeline
from metacanvas_core.planner import Planner
from metacanvas_core.training import backbone as train_backbone
from metacanvas_core.training import planner as train_planner
from metacanvas_core.training import vae as train_vae
from metacanvas_core.training.loop import ResumableRun


class Interrupted(Exception):
    pass


def _toy_run(run_dir, steps, stop_at=None, **schedule):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    run = ResumableRun(run_dir, {"m": model}, list(model.parameters()), lr=1e-2, warmup=2, steps=steps, seed=3,
                       save_every=2, **schedule)

    def step(i, rng):
        if i == stop_at:
            raise Interrupted  # as if the process were killed: the last state was saved at step i
        x = torch.from_numpy(rng.normal(size=(16, 4))).float()
        return {"loss": (model(x) - x.sum(1, keepdim=True)).pow(2).mean()}

    run.run(step, log_every=1)
    return model


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    straight = _toy_run(tmp_path / "a", 6)
    _toy_run(tmp_path / "b", 4)
    resumed = _toy_run(tmp_path / "b", 6)  # picks up at step 4
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_cooldown_with_average_resumes_exactly_and_extends_a_constant_run(tmp_path):
    schedule = {"cooldown": 4, "ema_decay": 0.5}
    straight = _toy_run(tmp_path / "a", 10, **schedule)
    _toy_run(tmp_path / "b", 6)  # a finished constant-LR run ...
    with pytest.raises(Interrupted):  # ... extended with a cooldown, interrupted inside it ...
        _toy_run(tmp_path / "b", 10, stop_at=8, **schedule)
    resumed = _toy_run(tmp_path / "b", 10, **schedule)  # ... and resumed
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    # The model ends with the average; the state keeps the raw weights (and the average) to resume from.
    state = load_file(str(tmp_path / "a" / "state.safetensors"))
    raw, ema = state["model/m/0.weight"], state["ema/0"]
    assert torch.equal(straight[0].weight, ema) and not torch.equal(raw, ema)


def test_cooldown_schedule_and_bad_settings(tmp_path):
    model = torch.nn.Linear(2, 1)
    run = ResumableRun(tmp_path, {"m": model}, list(model.parameters()), lr=1.0, warmup=2, steps=10, seed=0, cooldown=4)
    assert [run.lr_at(s) for s in (0, 1, 5, 6, 9)] == [0.5, 1.0, 1.0, 1.0, 0.25]
    with pytest.raises(ValueError, match="cooldown=11"):
        ResumableRun(tmp_path, {"m": model}, list(model.parameters()), lr=1.0, warmup=2, steps=10, seed=0, cooldown=11)
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        ResumableRun(tmp_path, {"m": model}, list(model.parameters()), lr=1.0, warmup=2, steps=10, seed=0, ema_decay=1.0)


def test_trainers_write_what_the_loaders_read(tmp_path):
    planner_dir, vae_dir, sana_dir = tmp_path / "planner", tmp_path / "vae", tmp_path / "sana"
    train_planner.main(["--out", str(planner_dir), "--run-dir", str(tmp_path / "r1"), "--steps", "2", "--batch", "4"])
    train_vae.main(["--out", str(vae_dir), "--run-dir", str(tmp_path / "r2"), "--steps", "2", "--batch", "4"])
    common = ["--planner", str(planner_dir), "--steps", "2", "--batch", "4"]
    train_backbone.main(["--stage", "global", "--vae", str(vae_dir), "--out", str(sana_dir),
                         "--out-connector", str(tmp_path / "base.safetensors"), "--run-dir", str(tmp_path / "r3"), *common,
                         "--dit-heads", "1", "--dit-layers", "2"])
    dit = load_backbone(sana_dir).transformer.config
    assert (dit.num_attention_heads, dit.num_layers) == (1, 2)
    base = ["--base", str(sana_dir), "--base-connector", str(tmp_path / "base.safetensors"), *common]
    # Four steps: the LoRA's gradient passes the two zero-initialised connector projections from step 2 on.
    train_backbone.main(["--stage", "metacanvas", "--planner-lora-rank", "2", "--planner-lora-lr-scale", "0.5",
                         "--text-only-dropout", "0.3", "--text-only-dropout-on", "position",
                         "--out", str(tmp_path / "mc.safetensors"), "--run-dir", str(tmp_path / "r4"), *base, "--steps", "4"])
    with pytest.raises(SystemExit):  # only MetaCanvas has a canvas to fall back on
        train_backbone.main(["--stage", "global-continue", "--out", str(tmp_path / "x.safetensors"),
                             "--run-dir", str(tmp_path / "r6"), *base, "--text-only-dropout", "0.3"])
    with pytest.raises(SystemExit):  # a later stage keeps its base's DiT
        train_backbone.main(["--stage", "global-continue", "--out", str(tmp_path / "x.safetensors"),
                             "--run-dir", str(tmp_path / "r6"), *base, "--dit-heads", "4"])
    train_backbone.main(["--stage", "global-continue", "--out", str(tmp_path / "g.safetensors"),
                         "--run-dir", str(tmp_path / "r5"), *base, "--cooldown", "1", "--ema", "0.9",
                         "--timestep-sampling", "logit-normal"])

    mc, g = load_connector(tmp_path / "mc.safetensors"), load_connector(tmp_path / "g.safetensors")
    assert mc.method == "metacanvas" and g.method == "global"
    assert mc.dit_state.keys() == load_backbone(sana_dir).transformer.state_dict().keys()
    assert mc.recipe["stage"] == "metacanvas" and mc.recipe["steps"] == 4
    # The canvas connector moved off its zero init: training reached it through the hook.
    assert mc.connector.canvas_fuser.proj.weight.abs().sum() > 0
    assert all(up.weight.abs().sum() > 0 for up in mc.connector.canvas_lora.up.values())
    assert g.connector.canvas_lora is None
    assert (mc.recipe["planner_lora_rank"], mc.recipe["planner_lora_lr_scale"]) == (2, 0.5)
    assert (g.recipe["cooldown"], g.recipe["ema"]) == (1, 0.9)
    assert (mc.recipe["text_only_dropout"], g.recipe["text_only_dropout"]) == (0.3, 0.0)
    assert (mc.recipe["text_only_dropout_on"], g.recipe["text_only_dropout_on"]) == ("position", None)
    assert (mc.recipe["timestep_sampling"], g.recipe["timestep_sampling"]) == ("uniform", "logit-normal")
    # The LoRA learns in its own group at its own scale, apart from the canvas parts.
    groups = train_backbone.param_groups(load_backbone(sana_dir), mc.connector, 4.0, 0.5)
    lora = {id(p) for p in mc.connector.canvas_lora.parameters()}
    assert [g.get("lr_scale") for g in groups] == [None, 4.0, 0.5]
    assert {id(p) for p in groups[2]["params"]} == lora and not lora & {id(p) for p in groups[1]["params"]}
    pipe = MetaCanvasPipeline.from_pretrained(planner_dir, sana_dir, tmp_path / "mc.safetensors")
    out = pipe("a red circle at top left", steps=2)
    assert out.images.shape == (1, 32, 32, 3)


def test_timestep_sampling_keeps_the_shipped_draws_and_centres_logit_normal():
    # Uniform is what the shipped weights were trained with: the same draws as before the option existed.
    uniform = train_backbone.sample_timesteps(np.random.default_rng(3), 8)
    assert torch.equal(uniform, torch.from_numpy(np.random.default_rng(3).random(8)).float())
    t = train_backbone.sample_timesteps(np.random.default_rng(3), 20000, "logit-normal")
    assert 0 < t.min() and t.max() < 1 and abs(float(t.median()) - 0.5) < 0.02
    # sigmoid(N(0, 1)) puts P(|z| < ln 3) = 73 % of the draws in [0.25, 0.75], against 50 % for uniform.
    assert abs(float(((t > 0.25) & (t < 0.75)).float().mean()) - 0.728) < 0.02
    assert torch.equal(t, train_backbone.sample_timesteps(np.random.default_rng(3), 20000, "logit-normal"))
    with pytest.raises(ValueError, match="logit-normal"):
        train_backbone.sample_timesteps(np.random.default_rng(3), 8, "cosine")


def test_text_state_cache_does_not_depend_on_the_batch_a_prompt_came_in():
    # A resumed run starts with an empty cache and meets each prompt in another batch than the original run did.
    planner = Planner.from_pretrained(PLANNER)
    prompt, longer = "a red circle at top left", "two blue squares and a green triangle at bottom right"
    alone = train_backbone.TextStateCache(planner)([prompt])[0][0]
    states, mask = train_backbone.TextStateCache(planner)([longer, prompt])
    n = int(mask[1].sum())
    assert n == alone.shape[0] and not mask[1, n:].any() and not states[1, n:].any()
    assert torch.equal(states[1, :n], alone)


def test_text_only_dropout_keeps_the_canvas_prompt_and_drops_the_dit_text():
    seen = {}

    class Recording(train_backbone.TextStateCache):
        def __call__(self, prompts):
            seen["text"] = prompts
            return super().__call__(prompts)

    planner = Planner.from_pretrained(PLANNER)
    encode = planner.encode

    def recording_encode(prompts, canvas_tokens=None, *args, **kwargs):
        if canvas_tokens is not None:
            seen["canvas"] = prompts
        return encode(prompts, canvas_tokens, *args, **kwargs)

    planner.encode = recording_encode
    bb, conn = load_backbone(SANA_T2I), load_connector(ASSETS / "metacanvas_t2i.safetensors").connector
    rng = np.random.default_rng(0)
    # Captions go for CAPTION_DROPOUT of the samples in both places; the rest loses only the DiT's text.
    train_backbone.training_step(bb, conn, planner, Recording(planner), rng, 16, text_only_dropout=0.9)
    assert seen["text"] == [""] * 16 and sum(p != "" for p in seen["canvas"]) >= 12
    train_backbone.training_step(bb, conn, planner, Recording(planner), rng, 16, text_only_dropout=0.0)
    assert seen["text"] == seen["canvas"] and sum(p != "" for p in seen["text"]) >= 12
    with pytest.raises(SystemExit):  # with the 0.1 caption dropout, above 0.9 is no share at all
        train_backbone.main(["--stage", "metacanvas", "--planner", str(PLANNER), "--out", "x.safetensors",
                             "--run-dir", "unused", "--text-only-dropout", "0.95"])
    # Scoped to position captions: only those lose their DiT text (beyond the caption dropout, which drops both).
    rng = np.random.default_rng(1)
    train_backbone.training_step(bb, conn, planner, Recording(planner), rng, 48, text_only_dropout=0.9,
                                 text_only_dropout_on="position")
    kept = [(t, c) for t, c in zip(seen["text"], seen["canvas"]) if c]
    assert all(t == c for t, c in kept if " at " not in c) and any(" at " not in c for _, c in kept)
    positioned = [t for t, c in kept if " at " in c]
    assert positioned and sum(t == "" for t in positioned) >= len(positioned) - 2
    with pytest.raises(ValueError, match="position"):
        train_backbone.training_step(bb, conn, planner, Recording(planner), rng, 4, text_only_dropout_on="colour")

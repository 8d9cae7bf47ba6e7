"""The accelerate trainer, a few steps at a time: one process and two agree, a resume repeats an uninterrupted run,
real-data folders and shards train (broken samples skipped and counted, or stopping the run under --strict), full
DiT and DiT LoRA export weights that Load MetaCanvas Weights and `generate --weights` load."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from metacanvas_core.__main__ import main as cli
from metacanvas_core.backbones import load_backbone
from metacanvas_core.builtin import ASSETS, PLANNER, SANA_T2I
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.planner import Planner
from metacanvas_core.training import trainer
from metacanvas_core.training.data import DataStream, ImageFolder, export_shapes, open_dataset
from metacanvas_core.training.tasks import canvas_dit, t2i
from metacanvas_core.world import shapes

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--planner", str(PLANNER), "--base", str(SANA_T2I), "--base-connector", str(ASSETS / "global_t2i.safetensors")]


def train(*args: str) -> int:
    return cli(["train", *map(str, args)])


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def mc_args(out: Path, *extra) -> list[str]:
    return ["t2i", "--stage", "metacanvas", *BASE, "--out", str(out), "--batch", "4", "--log-every", "1", *extra]


def test_two_processes_follow_one_process(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on the CPU: a gloo group of 2 splitting the global batch.

    Each sample draws from its own (seed, step, index) generator, so both runs see the same 4 samples per step and
    differ only by float summation order. Asserted: loss and the clipped-before global gradient norm agree to 1e-5
    relative, the exported weights to 1e-5 absolute. An unaveraged process would have the gradient norm of its half
    of the batch (checked below to differ by far more)."""
    one, two, half = tmp_path / "one", tmp_path / "two", tmp_path / "half"
    assert train(*mc_args(one, "--steps", "3")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29517", "-m", "metacanvas_core", "train", *mc_args(two, "--steps", "3")]
    run = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = log(one), log(two)
    assert [r["num_processes"] for r in a] == [1] * 3 and [r["num_processes"] for r in b] == [2] * 3
    for r, s in zip(a, b):
        assert r["step"] == s["step"] and abs(r["loss"] - s["loss"]) <= 1e-5 * r["loss"]
        assert abs(r["grad_norm"] - s["grad_norm"]) <= 1e-5 * r["grad_norm"]
    wa, wb = load_file(one / "metacanvas_t2i.safetensors"), load_file(two / "metacanvas_t2i.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    # Negative control: one process alone on the first half of the batch (what process 0 would do unaveraged).
    assert train(*mc_args(half, "--steps", "1"), "--batch", "2") == 0
    assert abs(log(half)[0]["grad_norm"] - a[0]["grad_norm"]) > 0.05 * a[0]["grad_norm"]


class Interrupted(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    args = ["--steps", "4", "--cooldown", "2", "--ema", "0.5", "--save-every", "1", "--text-only-dropout", "0.5"]
    assert train(*mc_args(tmp_path / "a", *args)) == 0
    real = trainer.Trainer._micro_batch

    def dies_at_step_3(self, micro):
        if self.step == 3:
            raise Interrupted  # as if killed: the last state was written after step 3
        return real(self, micro)

    monkeypatch.setattr(trainer.Trainer, "_micro_batch", dies_at_step_3)
    with pytest.raises(Interrupted):
        train(*mc_args(tmp_path / "b", *args))
    monkeypatch.setattr(trainer.Trainer, "_micro_batch", real)
    assert len(list((tmp_path / "b" / "state").iterdir())) == 2  # --keep-states 2
    assert train(*mc_args(tmp_path / "b", *args, "--resume")) == 0
    wa, wb = (load_file(tmp_path / run / "metacanvas_t2i.safetensors") for run in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["loss"] for r in log(tmp_path / "a")] == [r["loss"] for r in log(tmp_path / "b")]
    # The state holds weights as safetensors, never pickled; the average (step 3 of 4 is in the cooldown) too.
    state = tmp_path / "a" / "state" / "step-00000004"
    assert (state / "model.safetensors").is_file() and (state / "ema.safetensors").is_file()
    assert not list(state.glob("pytorch_model*"))


def test_a_resume_with_other_model_flags_is_refused_naming_them(tmp_path, capsys):
    """run.json keeps the task's flags; resuming with another --text-only-dropout (or as another task) is a clear
    error before any model loads, while trainer flags such as a longer --steps may change."""
    assert train(*mc_args(tmp_path / "a", "--steps", "1", "--save-every", "1")) == 0
    flags = json.loads((tmp_path / "a" / "run.json").read_text())
    assert flags["task"] == "t2i" and flags["flags"]["stage"] == "metacanvas" and "steps" not in flags["flags"]
    assert train(*mc_args(tmp_path / "a", "--steps", "1", "--text-only-dropout", "0.3", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--text-only-dropout 0.3 (now" not in err and "--text-only-dropout 0.1 (now 0.3)" in err
    assert train(*mc_args(tmp_path / "a", "--steps", "2", "--save-every", "1", "--resume")) == 0
    assert train("edit", "--stage", "global-continue", "--planner", PLANNER, "--base", SANA_T2I,
                 "--out", tmp_path / "a", "--steps", "3", "--resume") == 2
    assert "holds a `train t2i` run, not `train edit`" in capsys.readouterr().err


def test_a_longer_resume_starts_its_own_average(tmp_path, monkeypatch):
    """Resuming a finished 4-step run with --steps 8 moves the cooldown to steps 6-8: the average the 4-step run
    kept over its own cooldown must not leak into the new one."""
    args = ["--cooldown", "2", "--ema", "0.5", "--save-every", "1", "--text-only-dropout", "0.5"]
    assert train(*mc_args(tmp_path / "a", "--steps", "4", *args)) == 0
    seen, real = [], trainer.Trainer._load

    def load(self, folder):
        real(self, folder)
        seen.append((self.step, self.ema))

    monkeypatch.setattr(trainer.Trainer, "_load", load)
    assert train(*mc_args(tmp_path / "a", "--steps", "8", *args, "--resume")) == 0
    assert seen[0][0] == 4 and seen[0][1] is None
    assert [r["step"] for r in log(tmp_path / "a")][-1] == 8


def test_accumulation_and_bf16_autocast_train_the_same_global_batch(tmp_path):
    """--grad-accum 2 averages two micro-batches of 2 into the step one batch of 4 takes (same samples, 1e-5);
    bf16 autocast (frozen planner and VAE in bf16) trains too, close to float32."""
    assert train(*mc_args(tmp_path / "one", "--steps", "2")) == 0
    assert train(*mc_args(tmp_path / "acc", "--steps", "2", "--grad-accum", "2")) == 0
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # accelerate fixes the precision once per process: a new one for bf16 ...
    try:
        assert train(*mc_args(tmp_path / "bf16", "--steps", "2", "--mixed-precision", "bf16")) == 0
    finally:
        AcceleratorState._reset_state(True)  # ... and back, so later tests run in float32 again
    one, acc, bf16 = log(tmp_path / "one"), log(tmp_path / "acc"), log(tmp_path / "bf16")
    for r, s, b in zip(one, acc, bf16):
        assert abs(r["loss"] - s["loss"]) <= 1e-5 * r["loss"]
        assert abs(r["grad_norm"] - s["grad_norm"]) <= 1e-5 * r["grad_norm"]
        assert abs(r["loss"] - b["loss"]) <= 0.05 * r["loss"] and b["loss"] != r["loss"]
    assert load_connector(tmp_path / "bf16" / "metacanvas_t2i.safetensors").recipe["mixed_precision"] == "bf16"


def test_lr_schedule_and_bad_settings(capsys):
    assert [trainer.lr_factor(s, 10, 2, 4) for s in (0, 1, 5, 6, 9)] == [0.5, 1.0, 1.0, 1.0, 0.25]
    for bad in (["--cooldown", "11"], ["--ema", "1.0", "--cooldown", "2"], ["--ema", "0.9"]):
        with pytest.raises(SystemExit):
            train(*mc_args(Path("unused"), "--steps", "10", *bad))
    with pytest.raises(SystemExit):  # only MetaCanvas has a canvas to fall back on
        train("t2i", "--stage", "global-continue", *BASE, "--out", "unused", "--text-only-dropout", "0.3")
    with pytest.raises(SystemExit):  # with the 0.1 caption dropout, above 0.9 is no share at all
        train(*mc_args(Path("unused"), "--text-only-dropout", "0.95"))
    with pytest.raises(SystemExit):  # a later stage keeps its base's DiT
        train(*mc_args(Path("unused"), "--dit-heads", "4"))
    assert train(*mc_args(Path("unused"), "--grad-accum", "3")) == 2
    assert "split evenly" in capsys.readouterr().err


def _folder_with_broken_samples(root: Path) -> list[str]:
    export_shapes(root, 6, seed=0, resolution=32, fmt="folder")
    (root / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (16, 16)).save(root / "small.png")
    with (root / "metadata.jsonl").open("a") as f:
        f.write(json.dumps({"file_name": "bad.png", "text": "a red circle"}) + "\n")
        f.write(json.dumps({"file_name": "small.png", "text": "a red circle"}) + "\n")
        f.write(json.dumps({"file_name": "000000.png"}) + "\n")  # no caption
    return ["bad.png", "small.png", "line 9"]


def test_folder_and_shard_data_round_trip_with_broken_samples(tmp_path, capsys):
    # export-dataset writes exactly the shapes world's renders and captions, and the reader gives them back.
    assert cli(["export-dataset", "--task", "t2i", "--n", "3", "--out", str(tmp_path / "ds")]) == 0
    rng = np.random.default_rng(0)
    folder = ImageFolder(tmp_path / "ds", 32)
    for i in range(3):
        scene = shapes.sample_scene(rng)
        ex = folder.load(i)
        assert ex.caption == scene.caption and ex.category == scene.category
        assert np.array_equal(ex.image, shapes.model_pixels(shapes.render(scene.objects, 32, rng)[None])[0])
    broken = _folder_with_broken_samples(tmp_path / "data")
    # 9 rows, 3 broken: 3 steps x 4 samples pass over each broken row once per epoch (12 draws > 9 rows).
    assert train(*mc_args(tmp_path / "run", "--steps", "3", "--data", str(tmp_path / "data"))) == 0
    err = capsys.readouterr().err
    assert all("skipped broken sample" in err and name in err for name in broken)
    # The log counts every pass-over of the 12 draws (the stream reports which files each draw skipped).
    stream = DataStream(open_dataset(tmp_path / "data", 32), seed=0, strict=False)
    expected = sum(len(stream[g][1]) for g in range(12))
    assert expected >= 3 and log(tmp_path / "run")[-1]["skipped"] == expected
    assert load_connector(tmp_path / "run" / "metacanvas_t2i.safetensors").recipe["data"] == str(tmp_path / "data")
    code = train(*mc_args(tmp_path / "strict", "--steps", "3", "--data", str(tmp_path / "data"), "--strict"))
    err = capsys.readouterr().err
    assert code == 2 and "broken training sample" in err and any(name in err for name in broken)
    # Latents and text states cached on disk the first time, read back the second: the same run.
    cached = []
    for name in ("fill", "read"):
        assert train(*mc_args(tmp_path / name, "--steps", "2", "--data", tmp_path / "data", "--cache-dir",
                              tmp_path / "cache")) == 0
        cached.append([r["loss"] for r in log(tmp_path / name)])
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) >= 6 + 3  # >= 6 images, >= 3 distinct prompts
    assert cached[0] == cached[1] and np.allclose(cached[0], [r["loss"] for r in log(tmp_path / "run")[:2]], rtol=1e-5)
    # The same samples as a webdataset-layout shard (image + .json caption).
    shard = export_shapes(tmp_path / "shards", 5, seed=0, resolution=32, fmt="tar")
    assert train(*mc_args(tmp_path / "tar", "--steps", "2", "--data", str(shard.parent))) == 0
    assert log(tmp_path / "tar")[-1]["skipped"] == 0


def test_lora_and_full_dit_train_export_and_load_in_canvas_connector(tmp_path, monkeypatch):
    assert train(*mc_args(tmp_path / "lora", "--steps", "2", "--dit-lora-rank", "4", "--gradient-checkpointing",
                          "--planner-lora-rank", "2", "--planner-lora-lr-scale", "0.5", "--canvas-lr-scale", "4",
                          "--timestep-sampling", "logit-normal", "--text-only-dropout-on", "position")) == 0
    assert train("t2i", "--stage", "global-continue", *BASE, "--out", str(tmp_path / "full"), "--batch", "4",
                 "--steps", "2") == 0
    bb = load_backbone(SANA_T2I)
    base = bb.transformer.state_dict()
    full = load_connector(tmp_path / "full" / "global_t2i.safetensors")  # a full fine-tune: the DiT folder beside
    assert full.method == "global" and full.dit.kind == "transformer"
    trained = full.dit_module(bb.transformer).state_dict()
    assert trained.keys() == base.keys() and any(not torch.equal(trained[k], base[k]) for k in base)
    mc = load_connector(tmp_path / "lora" / "metacanvas_t2i.safetensors")  # a LoRA: exported unmerged, beside
    assert mc.dit.kind == "lora" and mc.dit.path == tmp_path / "lora" / "metacanvas_t2i_dit_lora.safetensors"
    lora = mc.dit_lora_state()
    assert lora and all(k.startswith("transformer.") and ".lora_" in k and ".default." not in k for k in lora)
    mc.check_backbone(bb)
    r = mc.recipe
    assert (r["dit_lora_rank"], r["planner_lora_rank"], r["planner_lora_lr_scale"], r["canvas_lr_scale"]) == \
        (4, 2, .5, 4)
    assert (r["timestep_sampling"], r["text_only_dropout_on"], r["resolution"]) == \
        ("logit-normal", "position", [32, 32])
    assert mc.trained_sizes == [[32, 32]]
    # Load MetaCanvas Weights (the node) loads the exported file from models/metacanvas; generate --weights samples
    # with it.
    sys.path.insert(0, str(ROOT / "tests"))
    from editor_graph import PACK_NAME, load_pack

    pack = load_pack()
    comfy = importlib.import_module(f"{PACK_NAME}.nodes.comfy")
    monkeypatch.setattr(comfy, "_search_paths", lambda name: [str(tmp_path / "lora")] if name == "metacanvas" else [])
    node = pack.NODE_CLASS_MAPPINGS["MetaCanvasConnectorLoader"]
    loaded, = getattr(node(), node.FUNCTION)(weights="metacanvas_t2i.safetensors")
    assert loaded.method == "metacanvas"
    png, weights = tmp_path / "x.png", tmp_path / "lora" / "metacanvas_t2i.safetensors"
    assert cli(["generate", "--prompt", "a red circle at top left", "--weights", str(weights), "--steps", "2",
                "--out", str(png)]) == 0
    assert Image.open(png).size == (256, 256)


def test_tiny_world_tasks_write_what_the_loaders_read(tmp_path):
    assert train("vae", "--out", tmp_path / "v", "--steps", "2", "--batch", "4") == 0
    assert train("planner", "--out", tmp_path / "p", "--steps", "2", "--batch", "4") == 0
    assert train("t2i", "--stage", "global", "--planner", tmp_path / "p" / "planner", "--vae", tmp_path / "v" / "vae",
                 "--out", tmp_path / "g", "--steps", "2", "--batch", "4", "--dit-heads", "1", "--dit-layers", "2") == 0
    dit = load_backbone(tmp_path / "g" / "backbone").transformer.config
    assert (dit.num_attention_heads, dit.num_layers) == (1, 2)
    g = load_connector(tmp_path / "g" / "global_base_t2i.safetensors")
    assert g.method == "global" and g.dit.kind == "none"
    assert Planner.from_pretrained(tmp_path / "p" / "planner").hidden_size == 128


def test_timestep_sampling_keeps_the_uniform_draw_and_centres_logit_normal():
    assert canvas_dit.sample_timestep(np.random.default_rng(3)) == np.random.default_rng(3).random()
    rng = np.random.default_rng(3)
    t = np.array([canvas_dit.sample_timestep(rng, "logit-normal") for _ in range(20000)])
    assert 0 < t.min() and t.max() < 1 and abs(float(np.median(t)) - 0.5) < 0.02
    # sigmoid(N(0, 1)) puts P(|z| < ln 3) = 73 % of the draws in [0.25, 0.75], against 50 % for uniform.
    assert abs(float(((t > 0.25) & (t < 0.75)).mean()) - 0.728) < 0.02
    with pytest.raises(ValueError, match="logit-normal"):
        canvas_dit.sample_timestep(np.random.default_rng(3), "cosine")


def test_text_state_cache_does_not_depend_on_the_batch_a_prompt_came_in():
    planner = Planner.from_pretrained(PLANNER)
    prompt, longer = "a red circle at top left", "two blue squares and a green triangle at bottom right"
    alone = canvas_dit.TextStateCache(planner)([prompt])[0][0]
    states, mask = canvas_dit.TextStateCache(planner)([longer, prompt])
    n = int(mask[1].sum())
    assert n == alone.shape[0] and not mask[1, n:].any() and not states[1, n:].any()
    assert torch.equal(states[1, :n], alone)


def test_text_only_dropout_keeps_the_canvas_prompt_and_drops_the_dit_text():
    def prompts(share: float, on: str = "all", n: int = 48):
        args = type("A", (), {"text_only_dropout": share, "text_only_dropout_on": on, "timestep_sampling": "uniform",
                              "batch": n})()
        task, src = object.__new__(t2i.TextToImage), object.__new__(t2i.ImagesAndCaptions)
        src.args, src.res, src.stream, src.noise_shape = args, 32, None, lambda kind: (16, 8, 8)
        task.args, task.src = args, src
        task.conn = load_connector(ASSETS / "metacanvas_t2i.safetensors").connector
        out = [task.sample(np.random.default_rng([0, 0, i]), 0, i).data for i in range(n)]
        return [(d["text_prompt"], d["canvas_prompt"]) for d in out]

    # Captions go for CAPTION_DROPOUT of the samples in both places; the rest loses only the DiT's text.
    high = prompts(0.9)
    assert all(t == "" for t, _ in high) and sum(c != "" for _, c in high) >= 38
    assert all(t == c for t, c in prompts(0.0))
    # Scoped to position captions: only those lose their DiT text (beyond the caption dropout, which drops both).
    kept = [(t, c) for t, c in prompts(0.9, "position") if c]
    assert all(t == c for t, c in kept if " at " not in c) and any(" at " not in c for _, c in kept)
    positioned = [t for t, c in kept if " at " in c]
    assert positioned and sum(t == "" for t in positioned) >= len(positioned) - 2


@pytest.mark.parametrize("kind", ["flux", "wan"])
def test_the_same_task_trains_on_the_other_backbone_adapters(tmp_path, kind):
    """No backbone-specific code in the trainer or the task: tiny FLUX.1-Kontext and Wan 2.2 folders (as images, one
    frame) train with a DiT LoRA on their attention/FFN projections, and the weights fit their backbone."""
    torch.manual_seed(0)
    if kind == "flux":
        from metacanvas_core.world import tiny_flux as tiny

        tiny.save_flux_kontext_folder(tmp_path / kind, tiny.new_flux_dit(), tiny.new_flux_vae(),
                                      tiny.new_flux_scheduler())
    else:
        from metacanvas_core.world import tiny_wan as tiny

        tiny.save_wan_pipeline_folder(tmp_path / kind, tiny.new_wan_dit(), tiny.new_wan_vae(),
                                      tiny.new_wan_scheduler())
    assert train("t2i", "--stage", "metacanvas", "--planner", PLANNER, "--base", tmp_path / kind, "--resolution", "64",
                 "--out", tmp_path / "run", "--steps", "2", "--batch", "2", "--dit-lora-rank", "2") == 0
    backbone, weights = load_backbone(tmp_path / kind), load_connector(tmp_path / "run" / "metacanvas_t2i.safetensors")
    weights.check_backbone(backbone)
    targets = {k.removeprefix("transformer.").split(".lora_")[0] for k in weights.dit_lora_state()}
    assert targets and all(".attn" in k or ".ff" in k or "proj_mlp" in k for k in targets)  # only LoRA targets

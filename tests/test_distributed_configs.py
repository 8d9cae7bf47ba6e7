"""The shipped accelerate configs (configs/accelerate/) as far as a CPU can take them.

- Every file loads as `accelerate launch` reads it, and the environment it gives builds accelerate's plugin.
- DeepSpeed (ZeRO-2, ZeRO-3): the trainer has no DataLoader, so accelerate raised before step 1 while the config
  left `train_micro_batch_size_per_gpu` at "auto"; the trainer now fills it (and the accumulation, the global batch
  and the clipping) from its flags, and a config value that disagrees is refused. deepspeed.initialize itself is not
  run: DeepSpeed is not installed here and accelerate takes its DeepSpeed path only on GPUs.
- FSDP2: accelerate takes its FSDP path only on accelerators, so tests/fsdp_on_cpu.py switches the state to FSDP
  after the Accelerator is made; accelerate's own FSDP2 code then wraps, trains (DiT LoRA, checkpointing), saves
  sharded state and exports in a 2-process gloo group, matching one process. In float32: CPU autocast does not
  cast layer norms as CUDA's does, so the bf16 recipe is not run here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metacanvas_core.__main__ import main as cli
from metacanvas_core.builtin import ASSETS, PLANNER, SANA_T2I
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.training import trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"


def launch_env(config: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file config` gives the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(config), "train.py"]))
    if args.use_deepspeed:  # as launch_command does before deepspeed_launcher
        args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads_as_accelerate_launch_reads_it(name):
    env = launch_env(CONFIGS / name)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_gets_what_it_needs_without_a_dataloader(stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    env = launch_env(CONFIGS / f"deepspeed_zero{stage}_8gpu.yaml")
    # Accumulation and clipping are the trainer's flags: the shipped files leave them out, so the launcher does not
    # override --grad-accum (ACCELERATE_GRADIENT_ACCUMULATION_STEPS would) and DeepSpeed's clip is --max-grad-norm.
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env and "ACCELERATE_GRADIENT_CLIPPING" not in env
    for k, v in env.items():
        if k.startswith("ACCELERATE_"):
            monkeypatch.setenv(k, v)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage and plugin.is_auto("train_micro_batch_size_per_gpu")  # what made accelerate raise
    # --batch 64 over 8 processes x --grad-accum 2: 4 per GPU per micro-batch.
    trainer.fill_deepspeed_config(plugin.deepspeed_config, micro=4, grad_accum=2, processes=8, max_grad_norm=0.5)
    assert not plugin.is_auto("train_micro_batch_size_per_gpu") and not plugin.is_auto("gradient_accumulation_steps")
    cfg = plugin.deepspeed_config
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"], cfg["train_batch_size"],
            cfg["gradient_clipping"]) == (4, 2, 64, 0.5)
    # The values accelerate's _prepare_deepspeed then reads (it fills only what is still "auto").
    assert plugin.get_value("train_micro_batch_size_per_gpu") == 4
    assert plugin.get_value("zero_optimization.stage") == stage


def test_a_deepspeed_value_that_disagrees_with_the_flags_is_refused():
    cfg = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": "auto"}
    with pytest.raises(MetaCanvasError, match="train_micro_batch_size_per_gpu 8, but --batch"):
        trainer.fill_deepspeed_config(cfg, micro=4, grad_accum=1, processes=2, max_grad_norm=1.0)
    same = trainer.fill_deepspeed_config({"gradient_accumulation_steps": 2}, 4, 2, 2, 1.0)
    assert same["train_batch_size"] == 16


def test_an_accumulation_the_launcher_sets_against_grad_accum_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")
    assert cli(["train", "t2i", "--stage", "global-continue", "--planner", str(PLANNER), "--base", str(SANA_T2I),
                "--out", str(tmp_path / "r"), "--steps", "1", "--batch", "2", "--grad-accum", "2"]) == 2
    assert "gradient accumulation to 1, but --grad-accum is 2" in capsys.readouterr().err


def test_fsdp_wraps_the_blocks_of_whichever_backbone(tmp_path, monkeypatch):
    """The shipped FSDP config names the blocks of SANA, FLUX and Wan; a DiT with other blocks gets its own."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    from metacanvas_core.world import tiny_flux, tiny_wan

    env = launch_env(CONFIGS / "fsdp_8gpu.yaml")
    assert env["FSDP_VERSION"] == "2"
    for k, v in env.items():
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(k, v)
    torch.manual_seed(0)
    for dit, blocks in ((tiny_flux.new_flux_dit(), {"FluxTransformerBlock", "FluxSingleTransformerBlock"}),
                        (tiny_wan.new_wan_dit(), {"WanTransformerBlock"})):
        plugin = FullyShardedDataParallelPlugin()
        model = torch.nn.ModuleDict({"dit": dit})
        trainer.set_fsdp_wrap_classes(plugin, model)
        assert set(plugin.transformer_cls_names_to_wrap) == blocks
        plugin.set_auto_wrap_policy(model)  # accelerate's own step that raised on a class the model lacks
    plugin = FullyShardedDataParallelPlugin()
    plugin.transformer_cls_names_to_wrap = ["NoSuchBlock"]
    said = []
    trainer.set_fsdp_wrap_classes(plugin, torch.nn.ModuleDict({"dit": tiny_wan.new_wan_dit()}), said.append)
    assert plugin.transformer_cls_names_to_wrap == ["WanTransformerBlock"] and "NoSuchBlock" in said[0]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_fsdp2_prepares_trains_saves_and_exports_like_one_process(tmp_path):
    run = ["train", "t2i", "--stage", "metacanvas", "--planner", str(PLANNER), "--base", str(SANA_T2I),
           "--steps", "2", "--batch", "2", "--log-every", "1", "--save-every", "2", "--dit-lora-rank", "4",
           "--gradient-checkpointing"]
    config = tmp_path / "fsdp_2cpu.yaml"  # the shipped file, on 2 CPU processes in float32
    config.write_text((CONFIGS / "fsdp_8gpu.yaml").read_text().replace("num_processes: 8", "num_processes: 2")
                      .replace("use_cpu: false", "use_cpu: true").replace("mixed_precision: bf16",
                                                                         'mixed_precision: "no"'))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
              "--main_process_port", "29523", str(ROOT / "tests" / "fsdp_on_cpu.py"), *run, "--out",
              str(tmp_path / "fsdp")]
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = tmp_path / "fsdp" / "state" / "step-00000002"
    assert (state / "pytorch_model_fsdp_0").is_dir() and (state / "optimizer_0").is_dir()  # sharded, not DDP's file
    assert cli([*run, "--out", str(tmp_path / "one")]) == 0
    a, b = _log(tmp_path / "one"), _log(tmp_path / "fsdp")
    assert [r["num_processes"] for r in b] == [2, 2]
    for r, s in zip(a, b):
        assert abs(r["loss"] - s["loss"]) <= 1e-5 * r["loss"] and abs(r["grad_norm"] - s["grad_norm"]) <= 1e-4
    for name in ("metacanvas_t2i.safetensors", "metacanvas_t2i_dit_lora.safetensors"):
        wa, wb = load_file(tmp_path / "one" / name), load_file(tmp_path / "fsdp" / name)
        assert wa.keys() == wb.keys() and max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5

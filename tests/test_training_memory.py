"""What makes a canvas-DiT run fit at real scale, checked on the tiny models: a coarser canvas than the token grid,
checkpointing through the planner, the frozen DiT under a LoRA in the run's precision, and bounded caches."""

from __future__ import annotations

import torch

from metacanvas_core.builtin import ASSETS, PLANNER
from metacanvas_core.checkpoints import load_connector
from metacanvas_core.training.cli import train_parser
from metacanvas_core.training.tasks.base import TrainedModules, sample_rng
from metacanvas_core.training.tasks.t2i import TextToImage
from metacanvas_core.training.world_pool import FrozenMemo


def _task(tmp_path, *flags: str, dtype=torch.float32) -> TextToImage:
    args = train_parser("t2i").parse_args(["--stage", "metacanvas", "--planner", str(PLANNER), "--base",
                                           str(ASSETS / "sana_t2i"), "--out", str(tmp_path / "run"), *flags])
    torch.manual_seed(0)
    task = TextToImage(args, torch.device("cpu"), dtype)
    TrainedModules(task).train()
    return task


def _canvas_grad(task) -> tuple[torch.Tensor, torch.Tensor]:
    batch = task.batch([task.sample(sample_rng(0, 0, i), 0, i) for i in range(3)])
    with torch.no_grad():  # a non-zero canvas path, so the canvas tokens get a gradient through the planner
        task.conn.canvas_encoder.proj.weight.normal_(0, 0.02)
        task.conn.canvas_fuser.proj.weight.normal_(0, 0.02)
    loss = task.loss(batch)
    loss.backward()
    return loss.detach(), task.conn.canvas_tokens.grad.clone()


def test_checkpointing_through_the_planner_gives_the_same_gradient(tmp_path):
    plain_loss, plain = _canvas_grad(_task(tmp_path))
    task = _task(tmp_path, "--gradient-checkpointing")
    assert task.planner.language_model.is_activation_checkpointing
    loss, grad = _canvas_grad(task)
    assert torch.allclose(loss, plain_loss, rtol=1e-5) and torch.allclose(grad, plain, rtol=1e-4, atol=1e-8)
    assert grad.abs().sum() > 0


def test_a_coarser_canvas_is_resampled_to_the_token_grid(tmp_path):
    task = _task(tmp_path, "--canvas-grid", "4x4")
    assert task.conn.config.canvas_grid == [1, 4, 4] and task.conn.canvas_tokens.shape[0] == 16
    loss, grad = _canvas_grad(task)
    assert torch.isfinite(loss) and grad.abs().sum() > 0
    task.export({"dit": task.bb.transformer.state_dict(), "connector": task.conn.state_dict()}, tmp_path,
                task.recipe())
    w = load_connector(tmp_path / "metacanvas_t2i.safetensors")
    assert w.config.canvas_grid == [1, 4, 4] and w.recipe["canvas_grid"] == [1, 4, 4]


def test_the_frozen_dit_under_a_lora_is_held_in_the_runs_precision(tmp_path):
    task = _task(tmp_path, "--dit-lora-rank", "4", dtype=torch.bfloat16)
    dtypes = {p.requires_grad: {q.dtype for q in task.bb.transformer.parameters() if q.requires_grad == p.requires_grad}
              for p in task.bb.transformer.parameters()}
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}


def test_memos_keep_at_most_their_budget_least_recently_used_first(tmp_path):
    from metacanvas_core.training.data import DiskCache

    memo = FrozenMemo("x", DiskCache(tmp_path / "c"), max_bytes=3 * 1024 * 2)  # three 1024-element float16 tensors
    for k in "abcd":
        memo.put(k, torch.full((1024,), float(ord(k))))
    assert list(memo.mem) == ["b", "c", "d"] and memo.bytes == 3 * 2048
    memo.get("b")
    memo.put("e", torch.zeros(1024))
    assert list(memo.mem) == ["d", "b", "e"]
    assert memo.get("a")[0] == ord("a")  # gone from memory, read back from disk

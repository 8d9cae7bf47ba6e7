"""A small resumable training loop: AdamW, grad clip 1.0, safetensors state.

LR schedule warm-up / stable / cooldown: linear warm-up, constant, then (optionally) a linear fall to zero over the
last `cooldown` steps. Over the cooldown an exponential moving average of the weights may be kept; it replaces the
live weights when the run ends. A constant-LR run's checkpoints swing from one evaluation to the next; the
cooldown and the average settle them. Because the cooldown is the *end* of a run, extending a finished constant-LR
run with one equals a run planned that way from step 0.

Every step's randomness is derived from (seed, step), so a run resumed from its last state file continues
exactly as an uninterrupted one would. State (weights, optimizer moments, the average) is written with
safetensors, never pickle; a JSON-lines log records loss and wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn


def step_rng(seed: int, step: int) -> np.random.Generator:
    torch.manual_seed(seed * 1_000_003 + step)  # dropout and noise draws of this step
    return np.random.default_rng([seed, step])


class ResumableRun:
    def __init__(
        self,
        run_dir: str | Path,
        modules: dict[str, nn.Module],
        params: list[nn.Parameter] | list[dict],
        *,
        lr: float,
        warmup: int,
        steps: int,
        seed: int,
        save_every: int = 500,
        weight_decay: float = 0.0,
        cooldown: int = 0,
        ema_decay: float = 0.0,
    ) -> None:
        if not 0 <= cooldown <= steps:
            raise ValueError(f"cooldown={cooldown} must lie in [0, steps={steps}]")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay={ema_decay} must lie in [0, 1): e.g. 0.999, or 0 for no average")
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.modules = modules
        self.steps, self.seed, self.save_every, self.warmup, self.lr = steps, seed, save_every, warmup, lr
        self.cooldown, self.ema_decay = cooldown, ema_decay
        self.ema_start = steps - cooldown  # the average covers the cooldown (the whole run without one)
        # Parameter groups may carry an "lr_scale" (e.g. freshly initialised modules learning faster).
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        self.step, self.elapsed = 0, 0.0
        self.ema: list[torch.Tensor] | None = None
        self._resume()

    @property
    def state_path(self) -> Path:
        return self.dir / "state.safetensors"

    def _resume(self) -> None:
        if not self.state_path.is_file():
            return
        tensors = load_file(str(self.state_path))
        meta = json.loads((self.dir / "state.json").read_text())
        for name, module in self.modules.items():
            prefix = f"model/{name}/"
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state = {}
        for i, _ in enumerate(self.params):
            if f"optim/{i}/exp_avg" in tensors:
                state[i] = {k: tensors[f"optim/{i}/{k}"] for k in ("step", "exp_avg", "exp_avg_sq")}
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})
        self.step, self.elapsed = meta["step"], meta["elapsed"]
        if self.ema_decay and "ema/0" in tensors:
            self.ema = [tensors[f"ema/{i}"] for i in range(len(self.params))]
        elif self.ema_decay and self.step > self.ema_start:
            print(f"warning: {self.dir} has no weight average but is past its start (step {self.ema_start}); "
                  "averaging from the current weights", flush=True)
        print(f"resumed {self.dir} at step {self.step}", flush=True)

    def save(self) -> None:
        tensors = {}
        for name, module in self.modules.items():
            for k, v in module.state_dict().items():
                tensors[f"model/{name}/{k}"] = v.detach().contiguous().clone()
        for i, s in self.opt.state_dict()["state"].items():
            for k in ("step", "exp_avg", "exp_avg_sq"):
                tensors[f"optim/{i}/{k}"] = torch.as_tensor(s[k]).contiguous().clone()
        for i, e in enumerate(self.ema or []):
            tensors[f"ema/{i}"] = e.contiguous().clone()
        tmp = self.state_path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(self.state_path)
        (self.dir / "state.json").write_text(json.dumps({"step": self.step, "elapsed": self.elapsed}))

    def run(self, step_fn: Callable[[int, np.random.Generator], dict[str, float]], log_every: int = 50) -> None:
        """Call `step_fn(step, rng) -> {"loss": tensor, ...}` until `steps`; backward, clip, step, log, save.

        With a weight average, the live parameters hold the average when this returns (the state file keeps the
        raw weights, so a longer run can still resume from it)."""
        log = (self.dir / "log.jsonl").open("a")
        for m in self.modules.values():
            m.train()
        t0 = time.time()
        while self.step < self.steps:
            lr = self.lr_at(self.step)
            for g in self.opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            out = step_fn(self.step, step_rng(self.seed, self.step))
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self._update_ema()
            self.step += 1
            if self.step % log_every == 0 or self.step == self.steps:
                self.elapsed += time.time() - t0
                t0 = time.time()
                row = {"step": self.step, "elapsed_s": round(self.elapsed, 1), "lr": float(f"{lr:.3g}")}
                row.update({k: round(float(v.detach() if torch.is_tensor(v) else v), 5) for k, v in out.items()})
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
            if self.step % self.save_every == 0 or self.step == self.steps:
                self.save()
        log.close()
        if self.ema is not None:
            with torch.no_grad():
                for p, e in zip(self.params, self.ema):
                    p.copy_(e)
        for m in self.modules.values():
            m.eval()

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        cool = min(1.0, (self.steps - step) / self.cooldown) if self.cooldown else 1.0
        return self.lr * warm * cool

    def _update_ema(self) -> None:
        if not self.ema_decay or self.step < self.ema_start:
            return
        with torch.no_grad():
            if self.ema is None:
                self.ema = [p.detach().clone() for p in self.params]
            else:
                for e, p in zip(self.ema, self.params):
                    e.lerp_(p, 1.0 - self.ema_decay)

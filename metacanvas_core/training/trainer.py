"""The one training loop, on accelerate: the same code in one process and under `accelerate launch` (DDP by default;
FSDP and DeepSpeed through accelerate config files), for every task.

Per optimizer step: each process draws its share of the global batch, sample by sample, from the samples' own
generators (tasks/base.py); `accumulate` micro-batches, DDP averages the gradients, the global norm is clipped to
`--max-grad-norm`, AdamW steps. LR: linear warm-up, constant, then optionally a linear fall to zero over the last
`--cooldown` steps, over which an exponential average of the weights may be kept (`--ema`): it is what gets
exported. The LR is a function of the step alone, so a resume needs no scheduler state.

State every `--save-every` steps under OUT/state/step-N: accelerate's `save_state` (model weights as safetensors;
optimizer moments through torch.save, which holds no model weights), plus the weight average as safetensors and
the step in JSON. `--resume` continues from the latest. OUT/log.jsonl: one JSON object per logged step. OUT/run.json:
the task's flags at the start; a `--resume` with other model flags is refused, naming them (the trainer's own flags,
e.g. a longer --steps, may change).

There is no DataLoader: the trainer fills in what DeepSpeed would infer from one (micro-batch, accumulation, global
batch, clipping, from --batch / --grad-accum / --max-grad-norm), and FSDP wraps the --base DiT's own blocks. With
--dataloader-workers, forked workers draw the same micro-batches ahead of the step. --validation-prompt samples the
current weights through the task's sampling pipeline every --validation-every steps (OUT/validation/step_N/).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import MetaCanvasError
from .tasks.base import Task, TrainedModules, sample_rng

MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw-fused", "adamw-8bit")


def add_common_arguments(ap: argparse.ArgumentParser, steps: int, batch: int, lr: float, warmup: int) -> None:
    g = ap.add_argument_group("trainer (every task)")
    g.add_argument("--out", type=Path, required=True, help="run folder: state/, log.jsonl and the exported weights")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    g.add_argument("--batch", type=int, default=batch,
                   help="global batch per optimizer step (split over processes and accumulation micro-batches)")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation micro-batches per step")
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--warmup", type=int, default=warmup, help="linear LR warm-up steps")
    g.add_argument("--cooldown", type=int, default=0,
                   help="the LR falls linearly to zero over this many final steps (0 = constant to the end)")
    g.add_argument("--ema", type=float, default=0.0,
                   help="decay of a weight average kept over the cooldown and exported (e.g. 0.999; 0 = none)")
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                   help="adamw-fused needs CUDA; adamw-8bit needs bitsandbytes")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (the shipped recipes: 0)")
    g.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=None,
                   help="autocast precision (default: accelerate's config / launch flag, else no)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--save-every", type=int, default=500, help="write resumable state every N steps")
    g.add_argument("--keep-states", type=int, default=2, help="how many of the latest states to keep")
    g.add_argument("--resume", action="store_true", help="continue from the latest state in --out, if any")
    g.add_argument("--log-every", type=int, default=50, help="log.jsonl row every N steps (loss: their mean)")
    g.add_argument("--report-to", choices=("tensorboard", "wandb", "all"), help="accelerate tracker as well")
    g.add_argument("--strict", action="store_true", help="a broken data sample stops the run (default: skip it)")
    g.add_argument("--dataloader-workers", type=int, default=0,
                   help="worker processes that read and decode the data samples ahead of the step (0: in the "
                        "training process); the frozen encoders still run in the training process")
    v = ap.add_argument_group("validation (canvas-DiT tasks)")
    v.add_argument("--validation-prompt", action="append", default=[], metavar="PROMPT",
                   help="sample this prompt with the current weights, as the task's sampling does (an image, a clip, "
                        "or an edit of a fixed example's source), every --validation-every steps and at the end; "
                        "saved under OUT/validation/step_N/ and logged to the --report-to tracker (repeatable)")
    v.add_argument("--validation-every", type=int, default=500, help="validation sampling every N steps")
    v.add_argument("--validation-steps", type=int, default=20, help="sampling steps of each validation sample")
    v.add_argument("--validation-cfg", type=float, default=3.0, help="classifier-free guidance of validation")


def lr_factor(step: int, steps: int, warmup: int, cooldown: int) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    cool = min(1.0, (steps - step) / cooldown) if cooldown else 1.0
    return warm * cool


def check_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.steps < 1 or args.batch < 1 or args.grad_accum < 1:
        ap.error("--steps, --batch and --grad-accum must be at least 1")
    if not 0 <= args.cooldown <= args.steps:
        ap.error(f"--cooldown {args.cooldown} must lie in [0, --steps {args.steps}]")
    if not 0.0 <= args.ema < 1.0:
        ap.error(f"--ema {args.ema} must lie in [0, 1)")
    if args.ema and not args.cooldown:
        ap.error("--ema averages over the cooldown: give --cooldown too")
    if args.validation_every < 1 or args.validation_steps < 1 or args.dataloader_workers < 0:
        ap.error("--validation-every and --validation-steps must be at least 1, --dataloader-workers 0 or more")
    if any(not p.strip() for p in args.validation_prompt):
        ap.error("--validation-prompt is empty: give the prompt to sample, e.g. 'a red circle at top left'")


def _optimizer(name: str, groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw-8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise MetaCanvasError("--optimizer adamw-8bit needs bitsandbytes (pip install bitsandbytes); "
                                  "or use --optimizer adamw") from e
        return bnb.optim.AdamW8bit(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw-fused" and not torch.cuda.is_available():
        raise MetaCanvasError("--optimizer adamw-fused needs CUDA; use --optimizer adamw on this machine")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=name == "adamw-fused" or None)


def _check_tracker(name: str | None) -> None:
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    for tracker, available, package in (("tensorboard", is_tensorboard_available, "tensorboard"),
                                         ("wandb", is_wandb_available, "wandb")):
        if name in (tracker, "all") and not available():
            raise MetaCanvasError(f"--report-to {name} needs {package} (pip install {package}); or drop --report-to "
                                  "(log.jsonl and the progress bar are always written)")


RESUMABLE_TASK_FLAGS = {"cache_dir"}  # task flags a resume may change: where caches live, not what is trained


def task_flags(task_cls: type[Task], args: argparse.Namespace) -> dict[str, str]:
    """The task's own flags (those its `add_arguments` registers) as strings: what a run's models and data are."""
    ap = argparse.ArgumentParser(add_help=False)
    task_cls.add_arguments(ap)
    dests = {a.dest for a in ap._actions} - RESUMABLE_TASK_FLAGS
    return {d: str(getattr(args, d)) for d in sorted(dests) if hasattr(args, d)}


def check_resume_flags(out: Path, name: str, flags: dict[str, str]) -> None:
    """Refuse to resume a run started as another task or with other model flags (a bare state-dict error later)."""
    path = out / "run.json"
    if not path.is_file():  # a run from before run.json was written
        return
    saved = json.loads(path.read_text())
    if saved.get("task") != name:
        raise MetaCanvasError(f"--resume: {out} holds a `train {saved.get('task')}` run, not `train {name}`: resume it "
                              "with that task, or give a new --out")
    old = saved.get("flags", {})
    diff = [f"--{k.replace('_', '-')} {old[k]} (now {v})" for k, v in flags.items() if k in old and old[k] != v]
    if diff:
        raise MetaCanvasError(f"--resume: {out} was started with other model flags: {', '.join(diff)}; resume with "
                              f"the run's own flags ({path} lists them), or give a new --out")


def fill_deepspeed_config(cfg: dict, micro: int, grad_accum: int, processes: int, max_grad_norm: float) -> dict:
    """Fill what DeepSpeed needs from the trainer's flags: the trainer draws its own samples (no DataLoader), so
    accelerate cannot infer `train_micro_batch_size_per_gpu` and raises when it is "auto". A value the config fixes
    must agree with the flags (or the run would silently train another batch)."""
    want = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": grad_accum,
            "train_batch_size": micro * grad_accum * processes, "gradient_clipping": max_grad_norm}
    flag = {"train_micro_batch_size_per_gpu": "--batch / (processes x --grad-accum)",
            "gradient_accumulation_steps": "--grad-accum", "train_batch_size": "--batch",
            "gradient_clipping": "--max-grad-norm"}
    for key, value in want.items():
        have = cfg.get(key, "auto")
        if have == "auto":
            cfg[key] = value
        elif float(have) != float(value):
            raise MetaCanvasError(f"the DeepSpeed config sets {key} {have}, but {flag[key]} gives {value}: set it to "
                                  "auto or leave it out (the trainer fills it in from its flags)")
    return cfg


def block_classes(model: torch.nn.Module) -> list[str]:
    """Class names of the repeated blocks of the trained modules (the members of an outermost nn.ModuleList of one
    class, e.g. a DiT's `transformer_blocks`): FSDP's shard units."""
    names, inside = [], set()
    for module in model.modules():
        if id(module) in inside or not isinstance(module, torch.nn.ModuleList) or not len(module):
            continue
        kinds = {type(block) for block in module}
        if len(kinds) == 1 and sum(p.numel() for p in module.parameters()):
            names += [k.__name__ for k in kinds if k.__name__ not in names]
            inside |= {id(m) for m in module.modules()}
    return names


def set_fsdp_wrap_classes(plugin, model: torch.nn.Module, say=print) -> None:
    """FSDP's transformer-based wrap names block classes; the shipped config names SANA's. Keep the configured names
    this model has; if it has none of them, wrap its own blocks (SANA, FLUX, Wan: whichever --base is)."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    policy = plugin.auto_wrap_policy
    if not (policy == transformer_auto_wrap_policy or policy == "transformer_based_wrap"
            or getattr(policy, "func", None) == transformer_auto_wrap_policy):
        return
    present = {type(m).__name__ for m in model.modules()}
    asked = plugin.transformer_cls_names_to_wrap or []
    kept = [n for n in asked if n in present]
    if not kept:
        kept = block_classes(model)
        say(f"FSDP: the config's blocks to wrap ({', '.join(asked) or 'none'}) are not in this model; wrapping its "
            f"{', '.join(kept)}")
    plugin.transformer_cls_names_to_wrap = kept


def _states(out: Path) -> list[Path]:
    return sorted((out / "state").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


class Trainer:
    def __init__(self, task_cls: type[Task], args: argparse.Namespace) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, ProjectConfiguration

        self.args, out = args, args.out
        _check_tracker(args.report_to)
        self.acc = acc = Accelerator(
            cpu=not torch.cuda.is_available(),  # on CPU, `accelerate launch --multi_gpu` processes form a gloo group
            mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum,
            log_with=args.report_to, project_config=ProjectConfiguration(project_dir=str(out),
                                                                         logging_dir=str(out / "logs")))
        self.n = acc.num_processes
        if args.batch % (self.n * args.grad_accum):
            raise MetaCanvasError(
                f"--batch {args.batch} must split evenly over {self.n} processes x --grad-accum {args.grad_accum}")
        self.micro = args.batch // (self.n * args.grad_accum)
        if acc.gradient_accumulation_steps != args.grad_accum:  # ACCELERATE_GRADIENT_ACCUMULATION_STEPS overrides ours
            raise MetaCanvasError(f"the accelerate config / launch flags set gradient accumulation to "
                                  f"{acc.gradient_accumulation_steps}, but --grad-accum is {args.grad_accum}: drop "
                                  "gradient_accumulation_steps from the config (the trainer sets it from --grad-accum)")
        ds = acc.state.deepspeed_plugin
        if args.ema and ds is not None and ds.zero_stage == 3:
            raise MetaCanvasError("--ema needs whole weights in each process; ZeRO-3 shards them: use ZeRO-2 or FSDP")
        if ds is not None:
            fill_deepspeed_config(ds.deepspeed_config, self.micro, args.grad_accum, self.n, args.max_grad_norm)
        fsdp = acc.state.fsdp_plugin if acc.distributed_type == DistributedType.FSDP else None
        if args.validation_prompt and (fsdp is not None or (ds is not None and ds.zero_stage == 3)):
            raise MetaCanvasError("--validation-prompt samples in the main process from whole weights; FSDP and "
                                  "ZeRO-3 shard them: sample from the exported weights instead (or use DDP / ZeRO-2)")
        flags = task_flags(task_cls, args)
        resuming = args.resume and bool(_states(out))
        if resuming:
            check_resume_flags(out, task_cls.name, flags)
        # What the frozen models run in: the autocast precision (fp8 autocast still keeps them in bf16).
        dtype = {"no": torch.float32, "fp16": torch.float16}.get(acc.mixed_precision, torch.bfloat16)
        torch.manual_seed(args.seed)  # the same initial weights in every process
        self.task = task_cls(args, acc.device, dtype)
        self.model = TrainedModules(self.task).train()  # the frozen models the task holds stay in eval mode
        if fsdp is not None:
            set_fsdp_wrap_classes(fsdp, self.model, acc.print)
        groups = self.task.param_groups()
        self.opt = _optimizer(args.optimizer, groups, args.lr, args.weight_decay)
        self.model, self.opt = acc.prepare(self.model, self.opt)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.step, self.elapsed, self.skipped, self.ema = 0, 0.0, 0, None
        self.draws = None  # the data-loader workers' iterator of micro-batches, from the step the run starts at
        self.ema_start = args.steps - args.cooldown
        if resuming:
            self._load(_states(out)[-1])
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            if not resuming:
                (out / "run.json").write_text(json.dumps({"task": task_cls.name, "flags": flags}, indent=1) + "\n")
        if args.report_to:
            acc.init_trackers(f"metacanvas-{task_cls.name}", config={k: str(v) for k, v in vars(args).items()})

    # -- state ---------------------------------------------------------------------------------------------------
    def _named_trained(self) -> list[tuple[str, torch.nn.Parameter]]:
        ids = {id(p) for p in self.params}
        return [(n, p) for n, p in self.acc.unwrap_model(self.model).named_parameters() if id(p) in ids]

    def _save(self) -> None:
        a, acc = self.args, self.acc
        folder = a.out / "state" / f"step-{self.step:08d}"
        acc.save_state(str(folder), safe_serialization=True)
        if acc.is_main_process:
            if self.ema is not None:
                save_file({n: e.contiguous().cpu() for (n, _), e in zip(self._named_trained(), self.ema)},
                          str(folder / "ema.safetensors"))
            (folder / "trainer.json").write_text(json.dumps(
                {"step": self.step, "elapsed_s": self.elapsed, "skipped": self.skipped}))
            for old in _states(a.out)[: -a.keep_states]:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _load(self, folder: Path) -> None:
        self.acc.load_state(str(folder))
        meta = json.loads((folder / "trainer.json").read_text())
        self.step, self.elapsed, self.skipped = meta["step"], meta["elapsed_s"], meta["skipped"]
        if (folder / "ema.safetensors").is_file() and self.step >= self.ema_start:
            # (A resume with a longer --steps starts its cooldown later: an older run's average is not carried in.)
            saved = load_file(str(folder / "ema.safetensors"), device=str(self.acc.device))
            self.ema = [saved[n] for n, _ in self._named_trained()]
        elif self.args.ema and self.step > self.ema_start:
            self.acc.print(f"warning: {folder} has no weight average but is past its start (step {self.ema_start}); "
                           "averaging from the current weights")
        self.acc.print(f"resumed {folder} at step {self.step}")

    def _update_ema(self) -> None:
        if not self.args.ema or self.step < self.ema_start:
            return
        with torch.no_grad():
            if self.ema is None:
                self.ema = [p.detach().clone() for p in self.params]
            else:
                for e, p in zip(self.ema, self.params):
                    e.lerp_(p, 1.0 - self.args.ema)

    # -- loop ----------------------------------------------------------------------------------------------------
    def _draw(self, step: int, micro: int) -> list:
        """This process's samples of micro-batch `micro` of `step` (each from its own generator)."""
        first = (micro * self.n + self.acc.process_index) * self.micro
        return [self.task.sample(sample_rng(self.args.seed, step, i), step, i)
                for i in range(first, first + self.micro)]

    def _micro_batch(self, micro: int) -> tuple[dict, int]:
        if self.args.dataloader_workers:
            if self.draws is None:
                self.draws = _worker_draws(self, self.step)
            step, m, samples = next(self.draws)
            assert (step, m) == (self.step, micro), f"the workers drew micro-batch {step}/{m}, not {self.step}/{micro}"
        else:
            samples = self._draw(self.step, micro)
        return self.task.batch(samples), sum(len(s.skipped) for s in samples)

    def _validate(self) -> None:
        """Sample the validation prompts with the current weights (main process; the others wait)."""
        a, acc = self.args, self.acc
        if acc.is_main_process:
            model = acc.unwrap_model(self.model)
            model.eval()  # no dropout in the text connector
            try:
                with torch.no_grad(), acc.autocast():
                    outputs = self.task.validate(a.validation_prompt, a.validation_steps, a.validation_cfg, a.seed)
            finally:
                model.train()
            images = write_validation(a.out / "validation" / f"step_{self.step}", outputs)
            for tracker in acc.trackers:
                if hasattr(tracker, "log_images"):
                    kwargs = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
                    tracker.log_images({f"validation/{i}": im[None] for i, im in enumerate(images)}, self.step,
                                       **kwargs)
        acc.wait_for_everyone()

    def run(self) -> list[Path]:
        from tqdm.auto import tqdm

        a, acc = self.args, self.acc
        log = (a.out / "log.jsonl").open("a") if acc.is_main_process else None
        bar = tqdm(total=a.steps, initial=self.step, disable=not acc.is_main_process, desc=f"train {self.task.name}")
        window, t0, since = [], time.perf_counter(), 0
        while self.step < a.steps:
            lr = a.lr * lr_factor(self.step, a.steps, a.warmup, a.cooldown)
            for g in self.opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            loss_sum, skipped = torch.zeros((), device=acc.device), 0
            for micro in range(a.grad_accum):
                batch, k = self._micro_batch(micro)
                skipped += k
                with acc.accumulate(self.model):
                    loss = self.model(batch)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        grad_norm = acc.clip_grad_norm_(self.params, a.max_grad_norm)
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                loss_sum += loss.detach() / a.grad_accum
            self._update_ema()
            self.step += 1
            # Every process's share is the same size, so the mean of their means is the global batch's mean loss.
            step_loss, step_skipped = acc.reduce(loss_sum, "mean"), int(acc.reduce(
                torch.tensor(skipped, device=acc.device), "sum"))
            if not math.isfinite(float(step_loss)):
                raise MetaCanvasError(f"loss became {float(step_loss)} at step {self.step}: lower --lr or check data")
            self.skipped += step_skipped
            window.append(float(step_loss))
            since += a.batch
            bar.update(1)
            if self.step % a.log_every == 0 or self.step == a.steps:
                dt = time.perf_counter() - t0
                self.elapsed += dt
                row = {"step": self.step, "loss": round(sum(window) / len(window), 6), "lr": float(f"{lr:.4g}"),
                       "grad_norm": None if grad_norm is None else round(float(grad_norm), 6),  # None: DeepSpeed clips
                       "samples_per_s": round(since / dt, 2), "step_s": round(dt / len(window), 4),
                       "num_processes": self.n, "skipped": self.skipped, "elapsed_s": round(self.elapsed, 1)}
                bar.set_postfix(loss=f"{row['loss']:.4f}", samples_per_s=row["samples_per_s"])
                if log:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if a.report_to:
                    acc.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
                window, t0, since = [], time.perf_counter(), 0
            if self.step % a.save_every == 0 or self.step == a.steps:
                t_save = time.perf_counter()
                self._save()
                t0 += time.perf_counter() - t_save  # state writing is not training time
            if a.validation_prompt and (self.step % a.validation_every == 0 or self.step == a.steps):
                t_val = time.perf_counter()
                self._validate()
                t0 += time.perf_counter() - t_val  # nor is validation sampling
        bar.close()
        if log:
            log.close()
        return self._export()

    def _export(self) -> list[Path]:
        acc, a = self.acc, self.args
        if self.ema is not None:
            with torch.no_grad():
                for p, e in zip(self.params, self.ema):
                    p.copy_(e)
        state = acc.get_state_dict(self.model)  # full weights on the main process, also under FSDP / ZeRO-3
        written = []
        if acc.is_main_process:
            parts = {}
            for k, v in state.items():
                name, _, rest = k.removeprefix("parts.").partition(".")
                parts.setdefault(name, {})[rest] = v.detach().float().cpu()
            recipe = {"steps": a.steps, "batch": a.batch, "lr": a.lr, "seed": a.seed, "warmup": a.warmup,
                      "optimizer": f"{a.optimizer}, warm-up, constant, linear cooldown, clip {a.max_grad_norm}",
                      "cooldown": a.cooldown, "ema": a.ema, "num_processes": self.n, "grad_accum": a.grad_accum,
                      "mixed_precision": acc.mixed_precision, "wall_time_s": round(self.elapsed),
                      **self.task.recipe()}
            written = self.task.export(parts, a.out, recipe)
            acc.print(f"wrote {', '.join(map(str, written))} after {self.elapsed:.0f} s")
        acc.wait_for_everyone()
        acc.end_training()
        return written


class _Draws(torch.utils.data.Dataset):
    """Micro-batch k of the run from step `start` on (step start + k // accumulation, micro-batch k % accumulation),
    drawn exactly as the training process would draw it: what --dataloader-workers read ahead."""

    def __init__(self, trainer: Trainer, start: int) -> None:
        self.trainer, self.start, self.accum = trainer, start, trainer.args.grad_accum
        self.length = (trainer.args.steps - start) * self.accum

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int):
        step, micro = self.start + k // self.accum, k % self.accum
        return step, micro, self.trainer._draw(step, micro)


def _as_is(x):
    return x


def _worker_draws(trainer: Trainer, start: int):
    """Worker processes (forked: they share the task's data handles, never touch its models) that draw the run's
    micro-batches in order, a few ahead."""
    loader = torch.utils.data.DataLoader(_Draws(trainer, start), batch_size=None, shuffle=False,
                                         num_workers=trainer.args.dataloader_workers, collate_fn=_as_is,
                                         multiprocessing_context="fork", prefetch_factor=2)
    return iter(loader)


def write_validation(folder: Path, outputs: list[torch.Tensor]) -> list[np.ndarray]:
    """Each validation output (F, H, W, 3) in [0, 1] as `folder`/NN.png (a clip: its frames side by side, and
    NN.gif); returns what was written as uint8 (H, W', 3) images."""
    from PIL import Image

    from ..pixels import save_clip

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, frames in enumerate(outputs):
        x = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        strip = np.concatenate(list(x), axis=1)  # (H, F * W, 3)
        Image.fromarray(strip).save(folder / f"{i:02d}.png")
        if len(x) > 1:
            save_clip(frames.float().clamp(0, 1).cpu(), folder / f"{i:02d}.gif")
        images.append(strip)
    return images


def train(task_cls: type[Task], args: argparse.Namespace) -> list[Path]:
    return Trainer(task_cls, args).run()

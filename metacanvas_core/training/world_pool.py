"""The tiny worlds as fixed, indexed pools, so what frozen models compute from an example is computed once.

The worlds are generators: drawn afresh, every sample of every step is a new scene, and the frozen VAE (and, where
the planner sees an image, the planner) run on each of them: measured, the VAE alone was ~40 % of a video step.
A pool instead makes example `k` a function of `k` (its own generator, `example_rng(world, k)`), so its latents and
planner states are too: `FrozenMemo` keeps them by key in memory, and on disk under `--cache-dir`, where a resumed
or repeated run finds them. Which example a sample takes is still drawn from the sample's generator, so a resumed
run and a run split over processes see exactly the same examples (tasks/base.py).

A pool of 20k examples covers the training split of every tiny world (clip world: ~24k (motion, still object)
combinations before jitter; edit world: a few thousand source scenes per edit kind), so the DiT sees what a fresh
draw would show it, minus the combinatorial tail.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .data import DiskCache

POOL_SIZE = 20_000


def example_rng(world: str, index: int) -> np.random.Generator:
    """The generator of example `index` of `world`'s pool: the same example in every run, process and resume."""
    key = int.from_bytes(hashlib.sha1(world.encode()).digest()[:8], "little")
    return np.random.default_rng([key, index])


def add_pool_arguments(ap, what: str) -> None:
    ap.add_argument("--pool", type=int, default=POOL_SIZE,
                    help=f"train on a fixed pool of this many {what} (example k always the same), so the frozen "
                         "VAE's latents and planner states of each are computed once; 0 = a fresh draw every sample")
    ap.add_argument("--cache-dir", type=Path,
                    help="keep those latents and planner states here too (safetensors), for resumed and later runs")


class FrozenMemo:
    """Tensors computed by frozen models, by key: in memory (the least recently used go past `max_bytes`) and, with a
    `DiskCache`, on disk. With `half`, kept as float16 (half the memory; a 20k pool of clip latents is ~0.6 GB) and
    handed out as that rounding whether just computed or read back, so a resumed run sees the very values an
    uninterrupted one did. `fingerprint` names the frozen models and settings, so another VAE or planner never reads
    them."""

    def __init__(self, fingerprint: str, disk: DiskCache | None = None, max_bytes: int = 4 << 30,
                 half: bool = True) -> None:
        self.fingerprint, self.disk, self.max_bytes, self.half = fingerprint, disk, max_bytes, half
        self.mem: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def _key(self, key: str) -> str:
        return f"{self.fingerprint}|{key}"

    def _keep(self, key: str, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().cpu()
        value = value.half() if self.half else value.float()
        if key in self.mem:
            self.bytes -= self.mem.pop(key).nbytes
        self.mem[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes and len(self.mem) > 1:  # a bound, so real-scale runs never fill the RAM
            self.bytes -= self.mem.popitem(last=False)[1].nbytes
        return value

    def get(self, key: str) -> torch.Tensor | None:
        if key in self.mem:
            self.mem.move_to_end(key)
            return self.mem[key].float()
        found = self.disk.get(self._key(key)) if self.disk else None
        return None if found is None else self._keep(key, found).float()

    def put(self, key: str, value: torch.Tensor) -> torch.Tensor:
        """Keep `value`; returns what `get` will hand out for it."""
        kept = self._keep(key, value)
        if self.disk:
            self.disk.put(self._key(key), kept)
        return kept.float()

    def many(self, keys: list[str | None], compute: Callable[[list[int]], Sequence[torch.Tensor]]
             ) -> list[torch.Tensor]:
        """The tensor of every key; `compute(indices)` makes those not kept yet (a key None is never kept) in one
        batch, returning them stacked in the order of `indices`. Kept ones come back on the CPU, others where
        `compute` made them."""
        out: list[torch.Tensor | None] = [None if k is None else self.get(k) for k in keys]
        first: dict[str, int] = {}  # a key twice in one batch is computed once
        todo = [i for i, v in enumerate(out) if v is None and (keys[i] is None or first.setdefault(keys[i], i) == i)]
        if todo:
            for i, v in zip(todo, compute(todo)):
                out[i] = v.detach() if keys[i] is None else self.put(keys[i], v)  # never kept, never rounded
        return [out[first[k]] if v is None else v for k, v in zip(keys, out)]


def module_fingerprint(module: torch.nn.Module) -> str:
    """A short digest of a frozen module's weights: cached outputs of one VAE are never read for another."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

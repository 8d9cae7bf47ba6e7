"""Does the plan know what goes where? A linear probe of the canvas embeddings on shapes-world layouts.

For every 3x3 cell, a linear classifier reads the canvas embeddings of the canvas tokens inside that cell and
predicts the colour of the object there (or "none"); a second one predicts its shape. The same probes on the
planner's *text* states (mean over the prompt) tell whether the layout is in the planner at all. Fitted on
training prompts, scored on held-out position prompts; "occupied" accuracy counts only cells that hold an object
(predicting "none" everywhere scores 0 there, whatever the majority class). Held-out triples leave a few
(shape, cell) pairs that no training prompt has, so even a perfect plan tops out near 91 % on shape.

`prompt_dependence` asks a cruder question first: do the canvas states change with the prompt at all? Trained
canvas tokens can make the frozen planner ignore the prompt (on a DiT without absolute positions the canvas becomes
a learnt position embedding, docs/experiments.md); random tokens of the same norm are the reference.
"""

from __future__ import annotations

import numpy as np
import torch

from .checkpoints import MetaCanvasWeights
from .planner import Planner
from .world.shapes import COLOURS, SHAPES, Scene, sample_scene

LABELS = ("none", *COLOURS)
SHAPE_LABELS = ("none", *SHAPES)
# What each cell is probed for: the `Obj` attribute and its classes.
PROBED: dict[str, tuple[str, ...]] = {"colour": LABELS, "shape": SHAPE_LABELS}


def cell_labels(scenes: list[Scene], attribute: str = "colour") -> torch.Tensor:
    """(N, 9) class index per 3x3 cell: 0 for empty, 1 + index of the object's colour (or shape) otherwise."""
    if attribute not in PROBED:
        raise ValueError(f"attribute must be one of {tuple(PROBED)}, not {attribute!r}")
    labels = PROBED[attribute]
    y = torch.zeros(len(scenes), 9, dtype=torch.long)
    for i, s in enumerate(scenes):
        for o in s.objects:
            y[i, o.cell] = labels.index(getattr(o, attribute))
    return y


def fit_cell_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   steps: int = 400, seed: int = 0) -> dict[str, float]:
    """One linear classifier per cell on features (N, 9, F); returns held-out accuracy overall and on occupied cells.

    Labels are class indices with 0 = empty cell; there are as many classes as the highest label in either set."""
    g = torch.Generator().manual_seed(seed)
    classes = int(max(train_y.max(), test_y.max())) + 1
    mu, sd = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-5
    w = (torch.randn(9, train_x.shape[-1], classes, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(9, classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2, weight_decay=1e-4)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ncf,cfk->nck", (x - mu) / sd, w) + b

    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits(train_x).flatten(0, 1), train_y.flatten()).backward()
            opt.step()
    with torch.no_grad():
        pred = logits(test_x).argmax(-1)
    occupied = test_y > 0
    return {"accuracy": float((pred == test_y).float().mean()),
            "occupied_accuracy": float((pred[occupied] == test_y[occupied]).float().mean()),
            "majority": float((test_y == 0).float().mean())}


def _features(planner: Planner, loaded: MetaCanvasWeights, scenes: list[Scene], batch: int = 100):
    """Per-cell canvas features (mean canvas embedding over the cell's tokens) and the mean text state."""
    conn = loaded.connector
    grid = conn.config.grid
    canvas, text = [], []
    with torch.no_grad():
        for i in range(0, len(scenes), batch):
            out = planner.encode([s.caption for s in scenes[i : i + batch]], conn.canvas_tokens, grid, conn.canvas_lora)
            dim = out.canvas_states.shape[-1]
            states = out.canvas_states.float().reshape(-1, grid.frames, grid.height, grid.width, dim)
            cells = torch.nn.functional.adaptive_avg_pool2d(states[:, 0].permute(0, 3, 1, 2), 3)  # (B, D, 3, 3)
            canvas.append(cells.flatten(2).transpose(1, 2))
            m = out.text_mask.unsqueeze(-1).float()
            text.append(((out.text_states.float() * m).sum(1) / m.sum(1)).unsqueeze(1).expand(-1, 9, -1))
    return torch.cat(canvas), torch.cat(text)


# Prompt pairs that differ only in where an object is, or which way it moves.
DEPENDENCE_PAIRS: dict[str, tuple[str, str]] = {
    "position": ("a red circle at top left", "a red circle at bottom right"),
    "motion": ("a red circle moves from left to right", "a red circle moves from right to left"),
}


def _relative_change(planner: Planner, tokens: torch.Tensor, grid, lora, pair: tuple[str, str]) -> float:
    with torch.no_grad():
        s = planner.encode(list(pair), tokens, grid, lora).canvas_states.float()
    return float(((s[0] - s[1]).norm(dim=-1) / s[0].norm(dim=-1)).mean())


def prompt_dependence(planner: Planner, loaded: MetaCanvasWeights, seed: int = 0) -> dict:
    """Per pair of `DEPENDENCE_PAIRS`: the canvas states' change between its two prompts (norm of the difference
    over the norm, mean over canvas tokens), for the trained tokens and for random ones of their mean norm."""
    loaded.require_canvas("to probe", "pass MetaCanvas weights (--weights)")
    conn = loaded.connector
    tokens = conn.canvas_tokens.detach().float()
    g = torch.Generator().manual_seed(seed)
    scale = tokens.norm(dim=-1).mean() / tokens.shape[-1] ** 0.5
    random = torch.randn(tokens.shape, generator=g) * scale
    return {name: {"trained": _relative_change(planner, tokens, conn.config.grid, conn.canvas_lora, pair),
                   "random_tokens": _relative_change(planner, random, conn.config.grid, conn.canvas_lora, pair)}
            for name, pair in DEPENDENCE_PAIRS.items()}


def probe_plan(
    planner: Planner, loaded: MetaCanvasWeights, n_train: int = 2000, n_test: int = 500, seed: int = 0
) -> dict:
    loaded.require_canvas("to probe", "pass MetaCanvas weights (--weights)")
    loaded.check_planner(planner, where="probe: weights")
    rng = np.random.default_rng(seed)
    train = [sample_scene(rng, "position", "train") for _ in range(n_train)]
    test = [sample_scene(rng, "position", "heldout") for _ in range(n_test)]
    (ctr, ttr), (cte, tte) = _features(planner, loaded, train), _features(planner, loaded, test)
    result = {"weights": loaded.name, "n_train": n_train, "n_test": n_test,
              "prompt_dependence": prompt_dependence(planner, loaded, seed)}
    for attribute in PROBED:
        ytr, yte = cell_labels(train, attribute), cell_labels(test, attribute)
        result[attribute] = {"canvas": fit_cell_probe(ctr, ytr, cte, yte, seed=seed),
                             "text": fit_cell_probe(ttr, ytr, tte, yte, seed=seed)}
    return result

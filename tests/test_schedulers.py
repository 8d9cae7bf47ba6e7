"""Every step count the nodes and the CLI allow runs to the end with every sampler (issue 15, point 1)."""

import pytest
import torch

from metacanvas_core.backbones.base import load_scheduler
from metacanvas_core.builtin import SANA_T2I
from metacanvas_core.limits import STEPS
from metacanvas_core.schedulers import SAMPLERS, make_scheduler, prepared

FOLDER_SCHEDULER = load_scheduler(SANA_T2I)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", sorted({STEPS.min, 2, 499, 500, 501, 601, 777, STEPS.max}))
def test_every_step_count_reaches_the_data(sampler, steps):
    """Without the DiT: the exact flow of one data point x0 (v = (x - x0) / sigma) must end on x0. Before the fix,
    DPM-Solver raised IndexError after 501..1000 steps (its integer timesteps repeat at the start)."""
    scheduler = prepared(make_scheduler(FOLDER_SCHEDULER, sampler, 3.0), steps)
    assert len(scheduler.timesteps) == steps
    g = torch.Generator().manual_seed(0)
    x0, x = torch.randn(1, 4, 2, 2, generator=g), torch.randn(1, 4, 2, 2, generator=g)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step((x - x0) / scheduler.sigmas[i], t, x, return_dict=False)[0]
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=1e-4)


def test_a_fresh_copy_per_run():
    a = prepared(FOLDER_SCHEDULER, 3)
    assert a is not FOLDER_SCHEDULER and prepared(FOLDER_SCHEDULER, 5).timesteps.shape == (5,)
    assert a.timesteps.shape == (3,)

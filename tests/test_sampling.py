"""Flow-matching sampling: deterministic per seed, CFG, progress callback, cancel, clear errors."""

import pytest
import torch

from metacanvas_core.backbones import load_backbone
from metacanvas_core.checkpoints import MetaCanvasWeights
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.plan import make_plan
from metacanvas_core.planner import Planner
from metacanvas_core.sampling import InjectedBackbone, SamplingCancelled, sample
from metacanvas_core.schedulers import make_scheduler, scheduler_name


@pytest.fixture(scope="module")
def parts(random_planner_dir, random_sana_dir):
    planner = Planner.from_pretrained(random_planner_dir)
    bb = load_backbone(random_sana_dir)
    torch.manual_seed(0)
    conn = MetaCanvasConnector(ConnectorConfig(planner.hidden_size, bb.dit_dim, bb.caption_channels, [1, 8, 8]))
    torch.nn.init.normal_(conn.canvas_fuser.proj.weight, std=0.1)
    torch.nn.init.normal_(conn.canvas_encoder.proj.weight, std=0.1)
    loaded = MetaCanvasWeights(conn.eval(), "sana", "test-connector", backbone_config=bb.fingerprint())
    model = InjectedBackbone(bb).inject(loaded)
    plan = make_plan(planner, loaded, ["a red circle at top left"], with_unconditional=True)
    return planner, loaded, model, plan


def test_same_seed_same_latents_other_seed_other_latents(parts):
    _, _, model, plan = parts
    kw = dict(width=32, height=32, steps=4, cfg=3.0)
    a = sample(model, plan, seed=5, **kw)
    assert torch.equal(a, sample(model, plan, seed=5, **kw))
    assert not torch.allclose(a, sample(model, plan, seed=6, **kw))


def test_per_sample_seeds_do_not_depend_on_the_batch(parts):
    planner, loaded, model, _ = parts
    plan = make_plan(planner, loaded, ["a red circle", "a blue square"], with_unconditional=True)
    both = sample(model, plan, seed=[11, 12], batch=2, width=32, height=32, steps=3)
    for i, (p, s) in enumerate((("a red circle", 11), ("a blue square", 12))):
        alone = sample(model, make_plan(planner, loaded, [p], with_unconditional=True), seed=[s], width=32, height=32, steps=3)
        torch.testing.assert_close(both[i : i + 1], alone, atol=1e-4, rtol=1e-4)


def test_canvas_and_cfg_change_the_result(parts):
    _, loaded, model, plan = parts
    kw = dict(width=32, height=32, steps=3, seed=1)
    with_canvas = sample(model, plan, **kw)
    no_canvas = sample(InjectedBackbone(model.backbone).inject(loaded, strength=0.0), plan, **kw)
    assert not torch.allclose(with_canvas, no_canvas)
    assert not torch.allclose(sample(model, plan, cfg=1.0, **kw), sample(model, plan, cfg=5.0, **kw))


def test_progress_and_cancel(parts):
    _, _, model, plan = parts
    seen = []
    sample(model, plan, width=32, height=32, steps=4, callback=lambda i, n, x: seen.append((i, n, tuple(x.shape))))
    assert seen == [(i, 4, (1, 16, 8, 8)) for i in range(1, 5)]
    calls = iter([False, False, True])
    with pytest.raises(SamplingCancelled, match="step 2 of 4"):
        sample(model, plan, width=32, height=32, steps=4, cancel=lambda: next(calls))


def test_bad_sizes_and_mismatched_plans_are_clear(parts):
    planner, loaded, model, plan = parts
    with pytest.raises(MetaCanvasError, match="width 30 does not fit.*multiples of 4.*use 32$"):
        sample(model, plan, width=30, height=32)
    other = MetaCanvasWeights(loaded.connector, "sana", "other-connector", backbone_config=loaded.backbone_config)
    with pytest.raises(MetaCanvasError, match="same MetaCanvas weights"):
        sample(model, make_plan(planner, other, ["a circle"]), width=32, height=32)
    nan_plan = make_plan(planner, loaded, ["a circle"])
    nan_plan.text[:] = float("nan")
    with pytest.raises(MetaCanvasError, match="NaN"):
        sample(model, nan_plan, width=32, height=32)
    with pytest.raises(MetaCanvasError, match="does not know.*'purple'"):
        make_plan(planner, loaded, ["a purple circle"])


def test_samplers_by_name(parts):
    _, _, model, _ = parts
    folder = model.backbone.scheduler
    own = make_scheduler(folder)
    assert type(own) is type(folder) and own is not folder  # a fresh copy: runs never share scheduler state
    dpm = make_scheduler(folder, "dpmpp_2m", 2.5)
    assert scheduler_name(dpm) == "DPMSolverMultistep, shift 2.5" and dpm.config.prediction_type == "flow_prediction"
    assert scheduler_name(make_scheduler(folder, "euler", 1.0)) == "FlowMatchEulerDiscrete, shift 1"
    with pytest.raises(MetaCanvasError, match="unknown sampler 'heun'.*dpmpp_2m"):
        make_scheduler(folder, "heun")
    with pytest.raises(MetaCanvasError, match="shift must be a finite number from 0.01 to 100"):
        make_scheduler(folder, "euler", 0.0)


def test_both_samplers_solve_the_backbones_flow(parts):
    """As steps grow, euler and dpmpp_2m converge to the same image: dpmpp_2m integrates the same flow ODE (read
    with another prediction type it would land elsewhere), only along other sigmas."""
    _, _, model, plan = parts
    kw = dict(width=32, height=32, cfg=1.0, seed=3)

    def run(name: str, steps: int) -> torch.Tensor:
        return sample(model, plan, steps=steps, scheduler=make_scheduler(model.backbone.scheduler, name, 3.0), **kw)

    exact = run("euler", 300)
    coarse, fine = (run("dpmpp_2m", 6) - exact).norm(), (run("dpmpp_2m", 60) - exact).norm()
    assert fine < 0.25 * coarse and fine < 0.05 * exact.norm(), (coarse, fine, exact.norm())



def test_a_cfg_batch_gives_each_sample_its_own_conditioning():
    """CFG runs the negative and the positive half of a batch in one call: each sample's source image must be its
    own in both halves. Two edits batched give what each gives alone (same seeds), with CFG and without."""
    from metacanvas_core.builtin import ASSETS, PLANNER
    from metacanvas_core.pipeline import MetaCanvasPipeline

    pipe = MetaCanvasPipeline.from_pretrained(PLANNER, ASSETS / "flux_edit", ASSETS / "global_edit.safetensors")
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(2, 32, 32, 3, generator=g)
    prompts = ["make the red circle green", "remove the blue square"]
    for cfg in (1.0, 3.0):
        both = pipe(prompts, task="edit", given=sources, steps=3, cfg=cfg, seed=[5, 6]).images
        for i in range(2):
            alone = pipe(prompts[i], task="edit", given=sources[i: i + 1], steps=3, cfg=cfg, seed=[5 + i]).images
            assert torch.allclose(both[i], alone[0], atol=1e-4), (cfg, i)


def test_lora_weights_sample_as_the_merged_dit_and_leave_the_backbone_plain(tmp_path, random_planner_dir,
                                                                           random_sana_dir):
    """A LoRA DiT part is switched on for its own runs only: sampling equals the DiT with the LoRA merged in, and a
    plain run on the same loaded backbone afterwards equals one on a fresh backbone."""
    from metacanvas_core.checkpoints import load_connector, save_connector
    from metacanvas_core.training.dit_lora import add_dit_lora, merge_dit_lora

    planner = Planner.from_pretrained(random_planner_dir)
    trained = load_backbone(random_sana_dir)
    add_dit_lora(trained.transformer, 4)
    torch.manual_seed(1)
    for name, p in trained.transformer.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    lora = {k.replace(".default.", "."): v for k, v in trained.transformer.state_dict().items() if ".lora_" in k}
    conn = MetaCanvasConnector(ConnectorConfig(planner.hidden_size, trained.dit_dim, trained.caption_channels,
                                               use_canvas=False))
    save_connector(tmp_path / "lora.safetensors", conn, trained, dit_lora=lora)
    save_connector(tmp_path / "plain.safetensors", conn, trained)
    merged = load_backbone(random_sana_dir)
    merged.transformer.load_state_dict(merge_dit_lora(trained.transformer.state_dict()))
    kw = dict(width=32, height=32, steps=3, cfg=3.0, seed=2)

    def run(bb, weights):
        loaded = load_connector(weights)
        return sample(InjectedBackbone(bb).inject(loaded), make_plan(planner, loaded, ["a red circle"], with_unconditional=True), **kw)

    shared = load_backbone(random_sana_dir)
    with_lora = run(shared, tmp_path / "lora.safetensors")
    assert torch.allclose(with_lora, run(merged, tmp_path / "plain.safetensors"), atol=1e-4)
    assert torch.equal(run(shared, tmp_path / "plain.safetensors"),
                       run(load_backbone(random_sana_dir), tmp_path / "plain.safetensors"))
    assert torch.equal(run(shared, tmp_path / "lora.safetensors"), with_lora)  # on again, loaded once

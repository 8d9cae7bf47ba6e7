"""Memory: refuse what cannot fit before allocating, propose what does, release after an out-of-memory error
(issue 15, point 2). The free-memory source is injected, so the figures do not depend on the machine."""

import re
import weakref

import pytest
import torch
from diffusers import AutoencoderDC, SanaTransformer2DModel

from metacanvas_core import memory
from metacanvas_core.backbones import SanaBackbone, load_backbone
from metacanvas_core.builtin import SANA_T2I
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.memory import check_fits, estimate, free_bytes
from metacanvas_core.world.tiny_models import new_scheduler

GB = 2**30


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(SANA_T2I)


@pytest.fixture(scope="module")
def sana_1600m():
    """The real classes with SANA 1600M's and its DC-AE's published configs, on the meta device (no memory)."""
    with torch.device("meta"):
        dit = SanaTransformer2DModel(
            in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32, num_layers=20,
            num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240,
            caption_channels=2304, mlp_ratio=2.5, sample_size=32, patch_size=1,
        )
        blocks = ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3
        vae = AutoencoderDC(
            latent_channels=32, encoder_block_types=blocks, decoder_block_types=blocks,
            encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
            decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
            encoder_layers_per_block=[2, 2, 2, 3, 3, 3], decoder_layers_per_block=[3] * 6,
            encoder_qkv_multiscales=[[], [], [], [5], [5], [5]], decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
            upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
        )
    return SanaBackbone(dit.to(torch.bfloat16), vae.to(torch.bfloat16), new_scheduler(), "Sana_1600M")


def free(n_bytes):
    return lambda device: n_bytes


def _proposal(message):
    w, h = re.search(r"use width (\d+) and height (\d+)", message).groups()
    return int(w), int(h)


def test_the_issue_sizes_are_refused_naming_the_inputs_and_a_size_that_fits(tiny):
    with pytest.raises(MetaCanvasError, match=r"^width 8192, height 8192, batch_size 64 need about .* GB of memory "
                                              r"for sampling, but the cpu has 16.0 GB free: use width \d+ and height "
                                              r"\d+$") as err:
        check_fits(tiny, width=8192, height=8192, batch=64, free=free(16 * GB))
    w, h = _proposal(str(err.value))
    assert w == h and w % tiny.pixels_per_token == 0
    assert estimate(tiny, width=w, height=h, batch=64).of("sampling") <= 16 * GB
    with pytest.raises(MetaCanvasError, match=r"batch_size 64 need .*: use width \d+ and height \d+ or batch_size "
                                              r"(\d+)$") as err:  # a smaller batch fits at this size
        check_fits(tiny, width=512, height=512, batch=64, free=free(2 * GB))
    b = int(err.value.args[0].rsplit(" ", 1)[1])
    assert 1 <= b < 64 and estimate(tiny, width=512, height=512, batch=b).of("sampling") <= 2 * GB
    assert estimate(tiny, width=512, height=512, batch=b + 1).of("sampling") > 2 * GB
    with pytest.raises(MetaCanvasError, match="width 16384, height 16384, batch_size 1 need about"):
        check_fits(tiny, width=16384, height=16384, batch=1, free=free(16 * GB))
    with pytest.raises(MetaCanvasError, match="for decoding"):
        check_fits(tiny, width=8192, height=8192, batch=64, stage="decoding", free=free(16 * GB))
    with pytest.raises(MetaCanvasError, match="free memory first"):
        check_fits(tiny, width=32, height=32, batch=1, free=free(1000))


def test_tiny_defaults_and_real_model_sizes_are_never_refused(tiny, sana_1600m):
    check_fits(tiny, width=32, height=32, batch=1, free=free(256 * 2**20))  # a quarter GB is plenty
    check_fits(tiny, width=512, height=512, batch=4, free=free(4 * GB))
    for size, batch, gpu in ((1024, 1, 8), (1024, 4, 20), (2048, 1, 20), (1024, 1, 6)):
        check_fits(sana_1600m, width=size, height=size, batch=batch, free=free(gpu * GB))  # a 24 GB GPU: 20 free
    # SANA's 4K needs VAE tiling in diffusers too: refused on a 24 GB card, with a size that fits
    with pytest.raises(MetaCanvasError, match="width 4096, height 4096, batch_size 1 need about") as err:
        check_fits(sana_1600m, width=4096, height=4096, batch=1, free=free(20 * GB))
    w, h = _proposal(str(err.value))
    assert 2048 <= w < 4096 and w % 32 == 0


def test_free_memory_of_this_machine():
    cpu = free_bytes("cpu")
    assert cpu is None or cpu > 0
    assert free_bytes("meta") is None  # unknown: no check


def test_sample_refuses_before_allocating(tiny, monkeypatch):
    from metacanvas_core.sampling import InjectedBackbone, initial_noise, latents_to_images, sample

    monkeypatch.setattr(memory, "free_bytes", free(2 * GB))
    monkeypatch.setattr("metacanvas_core.sampling.initial_noise",
                        lambda *a: pytest.fail("allocated before the check"))  # noqa: ARG005
    plan = _plan(tiny)
    with pytest.raises(MetaCanvasError, match="width 8192, height 8192, batch_size 64 need about"):
        sample(InjectedBackbone(tiny), plan, width=8192, height=8192, batch=64, steps=1, cfg=1.0)
    monkeypatch.setattr("metacanvas_core.sampling.initial_noise", initial_noise)
    with pytest.raises(MetaCanvasError, match="width 8192, height 8192, batch_size 1 need about .* for decoding"):
        latents_to_images(tiny, torch.zeros(1, tiny.latent_channels, 2048, 2048, device="meta"))


def _plan(bb, batch=1):
    from metacanvas_core.plan import CanvasPlan

    return CanvasPlan([""] * batch, torch.zeros(batch, 3, bb.caption_channels), torch.ones(batch, 3), None, "none")


def test_out_of_memory_releases_and_names_the_inputs(tiny, monkeypatch):
    from metacanvas_core.sampling import InjectedBackbone, latents_to_images, sample

    held = []

    def exhausted(*args, **kwargs):
        big = torch.empty(2**20)
        held.append(weakref.ref(big))
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 68719476736 bytes.")

    monkeypatch.setattr(tiny, "predict", exhausted)
    with pytest.raises(MetaCanvasError, match=r"^ran out of memory with width 32, height 16, batch_size 2 while "
                                              r"sampling; what the run had allocated is released") as err:
        sample(InjectedBackbone(tiny), _plan(tiny), width=32, height=16, batch=2, steps=2, cfg=1.0)
    assert err.value.__context__ is None and err.value.__cause__ is None
    assert held and held[0]() is None  # the failed call's tensors are gone, not kept by the error
    monkeypatch.setattr(tiny, "decode", exhausted)
    with pytest.raises(MetaCanvasError, match="ran out of memory with width 32, height 32, batch_size 1 while decod"):
        latents_to_images(tiny, torch.zeros(1, tiny.latent_channels, 8, 8))
    assert held[1]() is None

    def other(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(tiny, "predict", other)  # not memory: passes through untouched
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        sample(InjectedBackbone(tiny), _plan(tiny), width=32, height=16, steps=1, cfg=1.0)


def test_sample_image_node_refuses_the_issue_run_at_once(monkeypatch):
    """The issue's run (8192 x 8192, batch 64, inside the widget limits) filled 17 GB over a minute and failed with
    a raw allocator error; now Sample Image refuses it before sampling, naming the inputs and a size that fits."""
    import importlib

    from editor_graph import PACK_NAME, load_pack

    nodes = load_pack().NODE_CLASS_MAPPINGS
    comfy_glue = importlib.import_module(f"{PACK_NAME}.nodes.comfy")
    monkeypatch.setattr(memory, "free_bytes", free(16 * GB))
    call = lambda key, **kw: getattr(nodes[key](), nodes[key].FUNCTION)(**kw)[0]  # noqa: E731
    planner = call("MetaCanvasPlannerLoader", planner="built-in tiny: planner", dtype="auto", device="auto")
    backbone = call("MetaCanvasBackboneLoader", backbone="built-in tiny: sana_t2i", dtype="auto", device="auto")
    connector = call("MetaCanvasConnectorLoader", weights="built-in tiny: metacanvas_t2i")
    plan = call("MetaCanvasPlan", planner=planner, connector=connector, prompt="a red circle", canvas_only=False)
    model = call("MetaCanvasInject", backbone=backbone, connector=connector, strength=1.0)
    with pytest.raises(comfy_glue.NodeError, match=r"^Sample Image: width 8192, height 8192, batch_size 64 need "
                                                   r"about .* but the cpu has 16.0 GB free: use width \d+ and height"):
        nodes["MetaCanvasSampleImage"]().sample(model, plan, seed=0, steps=20, cfg=3.0, width=8192, height=8192,
                                                batch_size=64)

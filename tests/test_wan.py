"""Wan 2.2 through the one sampling loop: a replica of the released TI2V-5B folder layout samples exactly as the
diffusers Wan pipelines do, the keyframe canvas enters per frame and never the start frame, and clips are
deterministic, cancellable and validated."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel
from PIL import Image

from metacanvas_core.backbones import load_backbone
from metacanvas_core.backbones.base import Conditioning
from metacanvas_core.checkpoints import MetaCanvasWeights
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.injection import canvas_injected
from metacanvas_core.plan import CanvasPlan
from metacanvas_core.sampling import InjectedBackbone, SamplingCancelled, initial_noise, latents_to_images, sample
from metacanvas_core.world.clips import FRAMES as CLIP_FRAMES
from metacanvas_core.world.clips import SIZE as CLIP_SIZE
from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae, save_wan_pipeline_folder

REF = Path(__file__).resolve().parents[2] / "shared" / "reference-configs" / "Wan-AI--Wan2.2-TI2V-5B-Diffusers"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"reference configs not found at {REF}")
Z = 8  # replica latent channels


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    """The released folder's configs with every size made tiny (same keys, same patch sizes and compression
    factors, its real latents_mean/std), the transformer sharded with an index, UMT5 listed but absent."""
    folder = tmp_path_factory.mktemp("wan_replica")
    t = json.loads((REF / "transformer" / "config.reconstructed.json").read_text())
    t.update(num_attention_heads=2, attention_head_dim=24, num_layers=2, ffn_dim=96, text_dim=32,
             in_channels=Z, out_channels=Z, freq_dim=32)
    v = json.loads((REF / "vae" / "config.reconstructed.json").read_text())
    v.update(base_dim=8, decoder_base_dim=12, dim_mult=[1, 2, 2, 2], num_res_blocks=1, z_dim=Z,
             latents_mean=v["latents_mean"][:Z], latents_std=v["latents_std"][:Z])
    v.pop("clip_output")  # the constructor rejects it (diffusers only warns when loading)
    torch.manual_seed(0)
    WanTransformer3DModel.from_config(t).save_pretrained(folder / "transformer", max_shard_size="100KB")
    AutoencoderKLWan.from_config(v).save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir()
    shutil.copy(REF / "scheduler" / "scheduler_config.reconstructed.json",
                folder / "scheduler" / "scheduler_config.json")
    shutil.copy(REF / "model_index.reconstructed.json", folder / "model_index.json")
    return folder


def _plan(text: torch.Tensor, canvas: torch.Tensor | None = None, name: str = "wan-test") -> CanvasPlan:
    return CanvasPlan(["x"] * text.shape[0], text, torch.ones(text.shape[:2], dtype=torch.long), canvas, name)


@needs_ref
def test_replica_loads_and_samples_as_the_wan_pipelines_do(replica):
    bb = load_backbone(replica)
    index = json.loads((replica / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]  # listed, never loaded
    assert len(list((replica / "transformer").glob("*-of-*.safetensors"))) > 1
    assert type(bb).__name__ == "WanBackbone" and bb.expand_timesteps and bb.pixels_per_token == 32
    assert bb.token_grid(64, 64, 9) == (3, 2, 2) and bb.latent_shape(1, 64, 64, 9) == (1, Z, 3, 4, 4)
    torch.manual_seed(1)
    pos, neg = _plan(torch.randn(1, 5, 32)), _plan(torch.randn(1, 5, 32))
    kw = dict(width=64, height=64, frames=9, steps=3, seed=4)
    noise = initial_noise(bb.latent_shape(1, 64, 64, 9), 4)
    pipe_kw = dict(height=64, width=64, num_frames=9, num_inference_steps=3, latents=noise, output_type="latent")
    pipe = WanPipeline(None, None, bb.vae, bb.scheduler, transformer=bb.transformer, expand_timesteps=True)
    ours = sample(InjectedBackbone(bb), pos, **kw, cfg=1.0)
    assert torch.equal(ours, pipe(prompt_embeds=pos.text, guidance_scale=1.0, **pipe_kw).frames)
    ours_cfg = sample(InjectedBackbone(bb), pos, neg, **kw, cfg=3.0)
    theirs_cfg = pipe(prompt_embeds=pos.text, negative_prompt_embeds=neg.text, guidance_scale=3.0, **pipe_kw).frames
    torch.testing.assert_close(ours_cfg, theirs_cfg, atol=1e-5, rtol=1e-5)  # CFG batched here, two calls there
    # Decoding undoes latents_mean / latents_std exactly as the pipeline does.
    video = pipe(prompt_embeds=pos.text, guidance_scale=1.0, **{**pipe_kw, "output_type": "pt"}).frames
    torch.testing.assert_close(latents_to_images(bb, ours), video[0].permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)

    # Image-to-video: the start image's normalised latent is the first frame, at timestep 0, as TI2V does it.
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    start = Conditioning(first_frames=bb.encode(pixels))
    ours = sample(InjectedBackbone(bb), pos, conditioning=start, **kw, cfg=1.0)
    i2v = WanImageToVideoPipeline(None, None, bb.vae, bb.scheduler, transformer=bb.transformer, expand_timesteps=True)
    theirs = i2v(image=image, prompt_embeds=pos.text, guidance_scale=1.0, **pipe_kw).frames
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    assert torch.equal(ours[:, :, :1], start.first_frames)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan_tiny")
    torch.manual_seed(2)
    save_wan_pipeline_folder(folder, new_wan_dit(), new_wan_vae(base_dim=8), new_wan_scheduler())
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()  # sharded
    bb = load_backbone(folder)
    torch.manual_seed(0)
    conn = MetaCanvasConnector(ConnectorConfig(32, bb.dit_dim, bb.caption_channels, canvas_grid=[3, 4, 4]))
    canvas = conn.canvas_encoder(torch.randn(1, 48, 32)).detach()
    return bb, conn, canvas


def _injected(bb, conn, strength=1.0):
    return InjectedBackbone(bb).inject(MetaCanvasWeights(conn, "wan", "wan-test", backbone_config=bb.fingerprint()),
                                       strength)


def test_tiny_wan_compresses_4x_in_space_and_4x_in_time(tiny):
    bb, _, _ = tiny
    assert bb.vae.config.patch_size is None and bb.pixels_per_token == 4  # no pixel patch, DiT patch 1
    assert bb.token_grid(CLIP_SIZE, CLIP_SIZE, CLIP_FRAMES) == (5, 8, 8)
    clip = torch.rand(1, 3, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE) * 2 - 1
    with torch.no_grad():
        z = bb.encode(clip)
        assert z.shape == (1, 16, 5, 8, 8)
        assert bb.encode(clip[:, :, 0]).shape == (1, 16, 1, 8, 8)  # an image is a one-frame clip
        assert latents_to_images(bb, z).shape == (CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE, 3)


def test_zero_init_and_strength_zero_are_bit_identical_to_plain_wan(tiny):
    bb, conn, canvas = tiny
    text = torch.randn(1, 4, bb.caption_channels)
    start = Conditioning(first_frames=torch.randn(1, 16, 1, 8, 8))
    kw = dict(width=CLIP_SIZE, height=CLIP_SIZE, frames=17, steps=2, cfg=1.0, seed=3)
    for cond in (None, start):
        plain = sample(InjectedBackbone(bb), _plan(text), conditioning=cond, **kw)
        assert torch.equal(plain, sample(_injected(bb, conn), _plan(text, canvas), conditioning=cond, **kw))
    trained = MetaCanvasConnector(conn.config)
    trained.load_state_dict(conn.state_dict())
    torch.nn.init.normal_(trained.canvas_fuser.proj.weight, std=0.5)
    plain = sample(InjectedBackbone(bb), _plan(text), **kw)
    assert torch.equal(plain, sample(_injected(bb, trained, 0.0), _plan(text, canvas), **kw))
    assert not torch.allclose(plain, sample(_injected(bb, trained), _plan(text, canvas), **kw))


def test_canvas_enters_every_generated_frame_and_never_the_start_frame(tiny):
    bb, conn, canvas = tiny
    fuser = MetaCanvasConnector(conn.config).canvas_fuser
    torch.nn.init.normal_(fuser.proj.weight, std=0.5)
    grid = bb.token_grid(CLIP_SIZE, CLIP_SIZE, CLIP_FRAMES)
    full = conn.canvas_for_grid(canvas, *grid)  # 3 keyframes interpolated to 5 latent frames
    x, text, mask = torch.randn(1, 16, 5, 8, 8), torch.randn(1, 4, bb.caption_channels), torch.ones(1, 4)
    t, start = torch.tensor([500.0]), Conditioning(first_frames=torch.randn(1, 16, 1, 8, 8))
    seen = []
    handle = bb.transformer.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(5, 64, -1)))
    try:
        with torch.no_grad():
            bb.predict(x, t, text, mask, start)
            with canvas_injected(bb, fuser, full, grid, clean_frames=1):
                bb.predict(x, t, text, mask, start)
            with canvas_injected(bb, fuser, full, grid):
                bb.predict(x, t, text, mask)
    finally:
        handle.remove()
    plain, i2v, t2v = seen
    assert torch.equal(plain[0], i2v[0])  # the start frame's tokens are untouched
    assert all(not torch.allclose(plain[f], i2v[f]) for f in range(1, 5))
    assert not torch.allclose(plain[0], t2v[0])  # without a start frame, frame 0 is generated and steered
    assert torch.equal(i2v[1:], t2v[1:])  # per frame: dropping the start frame changes no other frame


def test_clips_are_deterministic_with_progress_and_cancel(tiny):
    bb, conn, canvas = tiny
    trained = MetaCanvasConnector(conn.config)
    trained.load_state_dict(conn.state_dict())
    torch.nn.init.normal_(trained.canvas_fuser.proj.weight, std=0.1)
    model, plan = _injected(bb, trained), _plan(torch.randn(1, 4, bb.caption_channels), canvas)
    seen = []
    kw = dict(width=CLIP_SIZE, height=CLIP_SIZE, frames=17, steps=3, cfg=1.0)
    a = sample(model, plan, seed=7, callback=lambda i, n, x: seen.append((i, n, tuple(x.shape))), **kw)
    assert seen == [(i, 3, (1, 16, 5, 8, 8)) for i in (1, 2, 3)]
    assert torch.equal(a, sample(model, plan, seed=7, **kw))
    assert not torch.allclose(a, sample(model, plan, seed=8, **kw))
    calls = iter([False, True])
    with pytest.raises(SamplingCancelled, match="step 1 of 3"):
        sample(model, plan, cancel=lambda: next(calls), **kw)
    # One start image serves a batch; every sample keeps it.
    start = Conditioning(first_frames=torch.randn(1, 16, 1, 8, 8))
    two = sample(model, dataclasses.replace(plan), conditioning=start, batch=2, seed=[1, 2], **kw)
    assert torch.equal(two[:, :, :1], start.first_frames.expand(2, -1, -1, -1, -1))


def test_bad_clip_requests_are_clear(tiny, random_sana_dir):
    bb, conn, canvas = tiny
    plan = _plan(torch.randn(1, 4, bb.caption_channels))
    kw = dict(width=CLIP_SIZE, height=CLIP_SIZE, steps=1, cfg=1.0)
    with pytest.raises(MetaCanvasError, match=r"frames 16 .*4k\+1.*use 13 or 17"):
        sample(InjectedBackbone(bb), plan, frames=16, **kw)
    with pytest.raises(MetaCanvasError, match="frames 0 .*use 1"):
        sample(InjectedBackbone(bb), plan, frames=0, **kw)
    with pytest.raises(MetaCanvasError, match="clip's width and height"):
        sample(InjectedBackbone(bb), plan, frames=17, conditioning=Conditioning(torch.randn(1, 16, 1, 4, 4)), **kw)
    with pytest.raises(MetaCanvasError, match="NaN"):
        sample(InjectedBackbone(bb), plan, frames=17,
               conditioning=Conditioning(torch.full((1, 16, 1, 8, 8), float("nan"))), **kw)
    sana = load_backbone(random_sana_dir)
    sana_plan = _plan(torch.randn(1, 4, sana.caption_channels))
    with pytest.raises(MetaCanvasError, match="makes images, not clips"):
        sample(InjectedBackbone(sana), sana_plan, width=32, height=32, frames=17, steps=1)
    with pytest.raises(MetaCanvasError, match="takes no start image"):
        sample(InjectedBackbone(sana), sana_plan, width=32, height=32, steps=1,
               conditioning=Conditioning(torch.randn(1, 16, 1, 8, 8)))


def test_weights_for_another_backbone_or_keyframe_count_are_refused(tiny, random_sana_dir):
    bb, conn, canvas = tiny
    sana = load_backbone(random_sana_dir)
    sana_conn = MetaCanvasConnector(ConnectorConfig(32, sana.dit_dim, sana.caption_channels, [1, 8, 8]))
    sana_weights = MetaCanvasWeights(sana_conn, "sana", "sana-weights", backbone_config=sana.fingerprint())
    with pytest.raises(MetaCanvasError, match="trained for a sana backbone.*is wan"):
        InjectedBackbone(bb).inject(sana_weights)
    with pytest.raises(MetaCanvasError, match="trained for a wan backbone.*is sana"):
        InjectedBackbone(sana).inject(MetaCanvasWeights(conn, "wan", "wan-test", backbone_config=bb.fingerprint()))
    one = torch.randn(1, 1, 4, 4, bb.dit_dim)  # a 1-keyframe canvas for weights trained with 3
    with pytest.raises(MetaCanvasError, match="1 keyframes but the injected weights 'wan-test' were trained with 3"):
        sample(_injected(bb, conn), _plan(torch.randn(1, 4, bb.caption_channels), one), width=CLIP_SIZE,
               height=CLIP_SIZE, frames=17, steps=1, cfg=1.0)

"""FLUX.1-Kontext through the one sampling loop: a replica of the released folder layout samples exactly as diffusers'
FluxKontextPipeline does (packing, ids, the source image's tokens, guidance, the shifted schedule), the canvas enters
the generated tokens and never the source image's, and bad conditioning is refused clearly."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FluxKontextPipeline, FluxTransformer2DModel
from PIL import Image

from metacanvas_core.backbones import load_backbone
from metacanvas_core.backbones.base import Conditioning
from metacanvas_core.backbones.flux import pack, unpack
from metacanvas_core.checkpoints import MetaCanvasWeights, load_connector, save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.injection import canvas_injected
from metacanvas_core.plan import CanvasPlan
from metacanvas_core.sampling import InjectedBackbone, initial_noise, latents_to_images, sample
from metacanvas_core.world.tiny_flux import (
    EDIT_IMAGE_SIZE, new_flux_dit, new_flux_scheduler, new_flux_vae, save_flux_kontext_folder,
)

REF = Path(__file__).resolve().parents[2] / "shared" / "reference-configs" / "black-forest-labs--FLUX.1-Kontext-dev"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"reference configs not found at {REF}")


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    """The released folder's configs with every width made tiny (same keys, 16 latent channels, four VAE blocks
    (8x), its shift and scaling factors, guidance embedding on, a pooled width unlike the text width), the
    transformer sharded with an index, CLIP and T5 listed but absent."""
    folder = tmp_path_factory.mktemp("flux_replica")
    t = json.loads((REF / "transformer" / "config.quoted-unverified.json").read_text())
    t.update(num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
             joint_attention_dim=32, pooled_projection_dim=24, axes_dims_rope=[4, 6, 6])
    v = json.loads((REF / "vae" / "config.FLUX.1-dev.json").read_text())
    v.update(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8)
    torch.manual_seed(0)
    FluxTransformer2DModel.from_config(t).save_pretrained(folder / "transformer", max_shard_size="100KB")
    AutoencoderKL.from_config(v).save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir()
    shutil.copy(REF / "scheduler" / "scheduler_config.FLUX.1-dev.json", folder / "scheduler" / "scheduler_config.json")
    shutil.copy(REF / "model_index.partial.json", folder / "model_index.json")
    return folder


def _plan(text: torch.Tensor, canvas: torch.Tensor | None = None, name: str = "flux-test", mask=None) -> CanvasPlan:
    mask = torch.ones(text.shape[:2], dtype=torch.long) if mask is None else mask
    return CanvasPlan(["x"] * text.shape[0], text, mask, canvas, name)


@needs_ref
def test_replica_loads_and_samples_as_the_kontext_pipeline_does(replica):
    bb = load_backbone(replica)
    index = json.loads((replica / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]  # listed, never loaded
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    assert len(list((replica / "transformer").glob("*-of-*.safetensors"))) > 1
    assert type(bb).__name__ == "FluxKontextBackbone" and bb.transformer.config.guidance_embeds
    assert bb.pixels_per_token == 16 and bb.token_grid(64, 48) == (1, 3, 4)
    assert bb.latent_shape(1, 64, 48) == (1, 16, 6, 8)
    pipe = FluxKontextPipeline(bb.scheduler, bb.vae, None, None, None, None, bb.transformer)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    pixels = pipe.image_processor.preprocess(image, 64, 64)
    with torch.no_grad():
        source = Conditioning(reference=bb.encode(pixels))  # the posterior's mode, shifted and scaled, as there
        assert torch.equal(source.reference, pipe._encode_vae_image(pixels, None))
    torch.manual_seed(1)
    pos, neg = _plan(torch.randn(1, 5, 32)), _plan(torch.randn(1, 5, 32))
    kw = dict(width=64, height=64, steps=3, seed=4)
    pipe_kw = dict(image=image, height=64, width=64, max_area=64 * 64, _auto_resize=False, num_inference_steps=3,
                   guidance_scale=2.5, latents=pack(initial_noise(bb.latent_shape(1, 64, 64), 4)),
                   output_type="latent", prompt_embeds=pos.text,
                   pooled_prompt_embeds=bb.pooled(pos.text, pos.text_mask))
    ours = sample(InjectedBackbone(bb), pos, conditioning=source, cfg=1.0, **kw)
    theirs = unpack(pipe(**pipe_kw).images, 8, 8)
    assert torch.equal(ours, theirs)
    # True CFG on top of the distilled guidance: batched here, two calls there.
    ours_cfg = sample(InjectedBackbone(bb), pos, neg, conditioning=source, cfg=3.0, **kw)
    theirs_cfg = pipe(**pipe_kw, true_cfg_scale=3.0, negative_prompt_embeds=neg.text,
                      negative_pooled_prompt_embeds=bb.pooled(neg.text, neg.text_mask)).images
    torch.testing.assert_close(ours_cfg, unpack(theirs_cfg, 8, 8), atol=1e-5, rtol=1e-5)
    # Without a source image it is text-to-image FLUX; decoding undoes shift and scale as the pipeline does.
    ours = sample(InjectedBackbone(bb), pos, cfg=1.0, **kw)
    pixels = pipe(**{**pipe_kw, "image": None, "output_type": "pt"}).images
    torch.testing.assert_close(latents_to_images(bb, ours), pixels.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)
    # The guidance value reaches the DiT.
    bb.guidance = 4.0
    try:
        assert not torch.allclose(sample(InjectedBackbone(bb), pos, cfg=1.0, **kw), ours)
    finally:
        bb.guidance = 2.5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux_tiny")
    torch.manual_seed(2)
    save_flux_kontext_folder(folder, new_flux_dit(), new_flux_vae(), new_flux_scheduler())
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()  # sharded
    bb = load_backbone(folder)
    torch.manual_seed(0)
    conn = MetaCanvasConnector(ConnectorConfig(32, bb.dit_dim, bb.caption_channels, canvas_grid=[1, 8, 8]))
    canvas = conn.canvas_encoder(torch.randn(1, 64, 32)).detach()
    return bb, conn, canvas


def _injected(bb, conn, strength=1.0):
    loaded = MetaCanvasWeights(conn, "flux", "flux-test", backbone_config=bb.fingerprint())
    return InjectedBackbone(bb).inject(loaded, strength)


def _trained(conn: MetaCanvasConnector, std: float = 0.5) -> MetaCanvasConnector:
    trained = MetaCanvasConnector(conn.config)
    trained.load_state_dict(conn.state_dict())
    torch.nn.init.normal_(trained.canvas_fuser.proj.weight, std=std)
    return trained


def test_tiny_kontext_is_an_8x8_token_grid_at_32_pixels(tiny):
    bb, _, _ = tiny
    s = EDIT_IMAGE_SIZE
    assert bb.token_grid(s, s) == (1, 8, 8) and bb.latent_shape(2, s, s) == (2, 16, 16, 16)
    assert sum(bb.transformer.config.axes_dims_rope) == bb.transformer.config.attention_head_dim
    fresh = {k: v for k, v in new_flux_dit().config.items() if not k.startswith("_")}
    assert fresh == bb.fingerprint()  # weights made on a fresh model pass the loaded backbone's check
    images = torch.rand(2, 3, s, s) * 2 - 1
    with torch.no_grad():
        z = bb.encode(images)
        assert z.shape == (2, 16, 16, 16) and torch.equal(unpack(pack(z), 16, 16), z)
        assert latents_to_images(bb, z).shape == (2, s, s, 3)


def test_zero_init_and_strength_zero_are_bit_identical_to_plain_kontext(tiny):
    bb, conn, canvas = tiny
    text = torch.randn(1, 4, bb.caption_channels)
    source = Conditioning(reference=torch.randn(1, 16, 16, 16))
    kw = dict(width=32, height=32, steps=2, cfg=1.0, seed=3)
    for cond in (None, source):
        plain = sample(InjectedBackbone(bb), _plan(text), conditioning=cond, **kw)
        assert torch.equal(plain, sample(_injected(bb, conn), _plan(text, canvas), conditioning=cond, **kw))
        trained = _trained(conn)
        assert torch.equal(plain, sample(_injected(bb, trained, 0.0), _plan(text, canvas), conditioning=cond, **kw))
        assert not torch.allclose(plain, sample(_injected(bb, trained), _plan(text, canvas), conditioning=cond, **kw))


def test_canvas_enters_the_generated_tokens_and_never_the_source_images(tiny):
    bb, conn, canvas = tiny
    fuser = _trained(conn).canvas_fuser
    grid = bb.token_grid(32, 32)
    full = conn.canvas_for_grid(canvas, *grid)
    x, text, mask = torch.randn(1, 16, 16, 16), torch.randn(1, 4, bb.caption_channels), torch.ones(1, 4)
    t, source = torch.tensor([500.0]), Conditioning(reference=torch.randn(1, 16, 16, 16))
    seen, levels = [], []
    block = bb.transformer.transformer_blocks[0]
    handle = block.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["hidden_states"][0]), with_kwargs=True)
    level = fuser.time_embed.register_forward_pre_hook(lambda m, a: levels.append(a[0]))
    try:
        with torch.no_grad():
            bb.predict(x, t, text, mask, source)
            with canvas_injected(bb, fuser, full, grid):
                bb.predict(x, t, text, mask, source)
                bb.predict(x, t, text, mask)
    finally:
        handle.remove()
        level.remove()
    torch.testing.assert_close(levels[0], t)  # the fuser sees the loop's 0..1000 scale, not the DiT's t / 1000
    plain, edit, t2i = seen
    assert plain.shape == edit.shape == (128, bb.dit_dim) and t2i.shape == (64, bb.dit_dim)
    assert torch.equal(plain[64:], edit[64:])  # the source image's tokens are untouched
    assert not torch.allclose(plain[:64], edit[:64])  # the generated ones are steered
    assert torch.equal(edit[:64], t2i)  # and alike with or without a source image beside them


def test_padded_text_is_masked_out(tiny):
    bb, _, _ = tiny
    x, text = torch.randn(1, 16, 16, 16), torch.randn(1, 4, bb.caption_channels)
    padded = torch.cat([text, torch.randn(1, 3, bb.caption_channels)], 1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    source = Conditioning(reference=torch.randn(1, 16, 16, 16))
    with torch.no_grad():
        a = bb.predict(x, torch.tensor([300.0]), text, torch.ones(1, 4), source)
        b = bb.predict(x, torch.tensor([300.0]), padded, mask, source)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bb.pooled(padded, mask), text.mean(1))
    # A CFG pair of different lengths and one source image for a batch of two run together.
    out = sample(InjectedBackbone(bb), _plan(text), _plan(padded), width=32, height=32, steps=1, cfg=2.0,
                 batch=2, seed=[1, 2], conditioning=source)
    assert out.shape == (2, 16, 16, 16) and torch.isfinite(out).all()


def test_kontext_weights_save_load_and_check_the_backbone(tiny, tmp_path, random_sana_dir):
    bb, conn, canvas = tiny
    trained = _trained(conn, 0.1)
    save_connector(tmp_path / "kontext.safetensors", trained, bb)
    loaded = load_connector(tmp_path / "kontext.safetensors")
    assert loaded.backbone_architecture == "flux" and loaded.backbone_config == bb.fingerprint()
    source = Conditioning(reference=torch.randn(1, 16, 16, 16))
    kw = dict(width=32, height=32, steps=2, cfg=1.0, seed=5, conditioning=source)
    plan = _plan(torch.randn(1, 4, bb.caption_channels), canvas, name="kontext")
    plan_direct = _plan(plan.text, canvas)
    ours = sample(InjectedBackbone(bb).inject(loaded), plan, **kw)
    assert torch.equal(ours, sample(_injected(bb, trained), plan_direct, **kw))
    with pytest.raises(MetaCanvasError, match="trained for a flux backbone"):
        InjectedBackbone(load_backbone(random_sana_dir)).inject(loaded)


def test_bad_edit_requests_are_clear(tiny, random_sana_dir):
    bb, _, _ = tiny
    plan = _plan(torch.randn(1, 4, bb.caption_channels))
    kw = dict(width=32, height=32, steps=1, cfg=1.0)
    with pytest.raises(MetaCanvasError, match="takes no start image"):
        sample(InjectedBackbone(bb), plan, conditioning=Conditioning(first_frames=torch.randn(1, 16, 1, 8, 8)), **kw)
    with pytest.raises(MetaCanvasError, match="makes images, not clips"):
        sample(InjectedBackbone(bb), plan, frames=5, **kw)
    with pytest.raises(MetaCanvasError, match="multiples of 4"):
        sample(InjectedBackbone(bb), plan, conditioning=Conditioning(reference=torch.randn(1, 16, 15, 16)), **kw)
    with pytest.raises(MetaCanvasError, match="encode the source image with this backbone's VAE"):
        sample(InjectedBackbone(bb), plan, conditioning=Conditioning(reference=torch.randn(1, 4, 16, 16)), **kw)
    with pytest.raises(MetaCanvasError, match="NaN"):
        sample(InjectedBackbone(bb), plan, conditioning=Conditioning(reference=torch.full((1, 16, 16, 16), np.nan)),
               **kw)
    with pytest.raises(MetaCanvasError, match="3 source images for a batch of 2"):
        sample(InjectedBackbone(bb), plan, batch=2, conditioning=Conditioning(reference=torch.randn(3, 16, 16, 16)),
               **kw)
    # A source image of another size than the output is allowed, as Kontext allows it.
    out = sample(InjectedBackbone(bb), plan, conditioning=Conditioning(reference=torch.randn(1, 16, 8, 12)), **kw)
    assert out.shape == (1, 16, 16, 16)
    sana = load_backbone(random_sana_dir)
    with pytest.raises(MetaCanvasError, match="takes no source image to edit.*FLUX.1-Kontext"):
        sample(InjectedBackbone(sana), _plan(torch.randn(1, 4, sana.caption_channels)), width=32, height=32, steps=1,
               conditioning=Conditioning(reference=torch.randn(1, 16, 8, 8)))


def test_wan_refuses_a_source_image_to_edit():
    from metacanvas_core.backbones import WanBackbone
    from metacanvas_core.world.tiny_wan import new_wan_dit, new_wan_scheduler, new_wan_vae

    wan = WanBackbone(new_wan_dit(layers=1), new_wan_vae(base_dim=8), new_wan_scheduler(), "tiny-wan")
    plan = _plan(torch.randn(1, 4, wan.caption_channels))
    with pytest.raises(MetaCanvasError, match="wan backbone 'tiny-wan' takes no source image to edit"):
        sample(InjectedBackbone(wan), plan, width=64, height=64, frames=17, steps=1,
               conditioning=Conditioning(reference=torch.randn(1, 16, 8, 8)))

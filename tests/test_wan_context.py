"""Video editing / in-context conditioning on Wan: conditioning latents and a mask concatenated with the noisy latents
along channels before the patch embedding; a text-to-video DiT widened with zero weights computes exactly what it
did, with the canvas still reaching every generated frame."""

import pytest
import torch
from diffusers import WanTransformer3DModel

from metacanvas_core.backbones import load_backbone
from metacanvas_core.backbones.base import Conditioning
from metacanvas_core.backbones.wan import WanBackbone, widened_for_context
from metacanvas_core.checkpoints import MetaCanvasWeights
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.plan import CanvasPlan
from metacanvas_core.sampling import InjectedBackbone, sample

KW = dict(width=32, height=32, frames=17, steps=2, cfg=1.0, seed=3)  # a clip-world clip


def _plan(text, canvas=None):
    return CanvasPlan(["x"] * text.shape[0], text, torch.ones(text.shape[:2], dtype=torch.long), canvas, "wan-ctx")


def _context(batch=1, mask_channels=4):
    torch.manual_seed(5)
    return Conditioning(context=torch.randn(batch, 16, 5, 8, 8), context_mask=torch.ones(batch, mask_channels, 5, 8, 8))


def test_widened_folder_is_a_real_wan_config(wan_pair):
    t2v, wide = wan_pair
    assert wide.transformer.config.in_channels == 16 * 2 + 4 and wide.transformer.config.out_channels == 16
    assert (t2v.latent_channels, wide.latent_channels, t2v.mask_channels, wide.mask_channels) == (16, 16, 0, 4)
    # What each backbone takes is asked of it: only the widened DiT has channels for context latents and their mask.
    assert t2v.takes("first_frames") and not t2v.takes("context") and not t2v.takes("reference")
    assert wide.takes("context") and wide.takes("context_mask")
    assert wide.latent_shape(1, 32, 32, 17) == t2v.latent_shape(1, 32, 32, 17) == (1, 16, 5, 8, 8)
    assert wide.fingerprint() != t2v.fingerprint()  # weights for one never pass for the other
    w = wide.transformer.patch_embedding.weight
    assert torch.equal(w[:, :16], t2v.transformer.patch_embedding.weight) and not w[:, 16:].any()
    with pytest.raises(MetaCanvasError, match="already widened"):
        widened_for_context(wide.transformer)


def test_zero_new_weights_are_bit_identical_to_t2v_with_conditioning_and_canvas(wan_pair):
    t2v, wide = wan_pair
    text = torch.randn(1, 4, t2v.caption_channels)
    cond = _context()
    assert torch.equal(sample(InjectedBackbone(t2v), _plan(text), **KW),
                       sample(InjectedBackbone(wide), _plan(text), conditioning=cond, **KW))
    # CFG doubles the batch: the conditioning serves both halves.
    neg = _plan(torch.randn(1, 4, t2v.caption_channels))
    assert torch.equal(sample(InjectedBackbone(t2v), _plan(text), neg, **{**KW, "cfg": 3.0}),
                       sample(InjectedBackbone(wide), _plan(text), neg, conditioning=cond, **{**KW, "cfg": 3.0}))
    # The canvas hook is unchanged: it steers every generated frame of the widened DiT as of the t2v one.
    torch.manual_seed(0)
    conn = MetaCanvasConnector(ConnectorConfig(32, t2v.dit_dim, t2v.caption_channels, canvas_grid=[3, 4, 4]))
    torch.nn.init.normal_(conn.canvas_fuser.proj.weight, std=0.5)
    canvas = conn.canvas_encoder(torch.randn(1, 48, 32)).detach()

    def injected(bb):
        return InjectedBackbone(bb).inject(MetaCanvasWeights(conn, "wan", "wan-ctx", backbone_config=bb.fingerprint()))

    steered = sample(injected(t2v), _plan(text, canvas), **KW)
    assert not torch.allclose(steered, sample(InjectedBackbone(t2v), _plan(text), **KW))
    assert torch.equal(steered, sample(injected(wide), _plan(text, canvas), conditioning=cond, **KW))


def test_nonzero_new_weights_make_the_conditioning_matter(wan_pair):
    _, wide = wan_pair
    dit = WanTransformer3DModel.from_config(wide.transformer.config)
    dit.load_state_dict(wide.transformer.state_dict())
    torch.nn.init.normal_(dit.patch_embedding.weight[:, 16:].data, std=0.1)
    bb = WanBackbone(dit, wide.vae, wide.scheduler, "wide-trained")
    x, t, text, m = torch.randn(1, 16, 5, 8, 8), torch.tensor([500.0]), torch.randn(1, 4, 64), torch.ones(1, 4)
    a, b = _context(), Conditioning(context=torch.randn(1, 16, 5, 8, 8), context_mask=torch.ones(1, 4, 5, 8, 8))
    with torch.no_grad():
        assert not torch.allclose(bb.predict(x, t, text, m, a), bb.predict(x, t, text, m, b))
        masked = Conditioning(context=a.context, context_mask=torch.zeros_like(a.context_mask))
        assert not torch.allclose(bb.predict(x, t, text, m, a), bb.predict(x, t, text, m, masked))


def test_bad_context_is_refused_clearly(wan_pair, random_sana_dir):
    t2v, wide = wan_pair
    plan = _plan(torch.randn(1, 4, t2v.caption_channels))
    with pytest.raises(MetaCanvasError, match="takes no source clip or reference images.*load a Wan folder made"):
        sample(InjectedBackbone(t2v), plan, conditioning=_context(), **KW)
    with pytest.raises(MetaCanvasError, match="made for video editing or in-context.*give the source clip"):
        sample(InjectedBackbone(wide), plan, **KW)
    with pytest.raises(MetaCanvasError, match=r"\(1, 16, 5, 8, 8\) do not fit latents \(1, 16, 4, 8, 8\).*frame count"):
        sample(InjectedBackbone(wide), plan, conditioning=_context(), **{**KW, "frames": 13})
    with pytest.raises(MetaCanvasError, match=r"context mask \(1, 1, 5, 8, 8\) do not fit"):
        sample(InjectedBackbone(wide), plan, conditioning=_context(mask_channels=1), **KW)
    with pytest.raises(MetaCanvasError, match="batch 3 for a batch of 2"):
        sample(InjectedBackbone(wide), plan, conditioning=_context(3), batch=2, **KW)
    nan = Conditioning(context=torch.full((1, 16, 5, 8, 8), float("nan")), context_mask=torch.ones(1, 4, 5, 8, 8))
    with pytest.raises(MetaCanvasError, match="NaN"):
        sample(InjectedBackbone(wide), plan, conditioning=nan, **KW)
    sana = load_backbone(random_sana_dir)
    assert sana.mask_channels == 0 and not any(sana.takes(p) for p in ("first_frames", "reference", "context"))
    with pytest.raises(MetaCanvasError, match="takes no source clip or reference images.*widened for video editing"):
        sample(InjectedBackbone(sana), _plan(torch.randn(1, 4, sana.caption_channels)), width=32, height=32,
               steps=1, conditioning=_context())

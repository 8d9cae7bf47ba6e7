"""Canvas resampling: identity, keyframe interpolation in time, resizing in space."""

import torch

from metacanvas_core.canvas_grid import resample_canvas


def test_same_grid_is_identity():
    x = torch.randn(2, 1, 4, 4, 8)
    assert torch.equal(resample_canvas(x, 1, 4, 4), x)


def test_keyframes_interpolate_linearly_to_every_frame():
    key = torch.stack([torch.full((2, 2, 1), v) for v in (0.0, 10.0, 20.0)]).unsqueeze(0)  # (1, 3, 2, 2, 1)
    out = resample_canvas(key, 5, 2, 2)
    assert out.shape == (1, 5, 2, 2, 1)
    assert torch.allclose(out[0, :, 0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0]))


def test_single_keyframe_holds_for_all_frames_and_space_resizes():
    x = torch.randn(1, 1, 2, 2, 3)
    out = resample_canvas(x, 4, 4, 4)
    assert out.shape == (1, 4, 4, 4, 3)
    assert torch.allclose(out[:, 0], out[:, 3])
    # Bilinear upsampling keeps the mean of each channel.
    assert torch.allclose(out[:, 0].mean((1, 2)), x[:, 0].mean((1, 2)), atol=1e-5)

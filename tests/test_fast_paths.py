"""The exact speed rewrites of the training steps against straightforward reference forms.

Each fast path must give the reference's values and gradients to float32 round-off: the Gaussian
blur as banded matmuls (against a zero-padded convolution), LNCC's five blurs as one stacked call
(against five separate blurs), TallUNet2's deepest up convolutions as one matmul (against
``nn.ConvTranspose``) and its 3-D layers with few output channels in channels-last layout.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equireg.losses import LNCC, gaussian_blur, gaussian_kernel
from equireg.unet import CHANNELS_LAST_OUT_CHANNELS, SMALL_TRANSPOSED_VOXELS, TallUNet2, small_transposed_conv

CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def reference_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The blur as separable depthwise convolutions with zero padding."""
    kernel = gaussian_kernel(sigma).to(image.dtype)
    dimension, channels = image.dim() - 2, image.shape[1]
    out = image
    for axis in range(dimension):
        shape = [1] * dimension
        shape[axis] = kernel.numel()
        weight = kernel.reshape(1, 1, *shape).expand(channels, *[-1] * (dimension + 1))
        out = CONVOLUTIONS[dimension](out, weight, padding="same", groups=channels)
    return out


def reference_lncc(warped: torch.Tensor, fixed: torch.Tensor, sigma: float) -> torch.Tensor:
    """LNCC with one blur per local moment."""
    blur = lambda t: reference_blur(t, sigma)  # noqa: E731
    mean_i, mean_j = blur(warped), blur(fixed)
    covariance = blur(warped * fixed) - mean_i * mean_j
    variance_i = torch.relu(blur(warped * warped) - mean_i ** 2) + 1e-5
    variance_j = torch.relu(blur(fixed * fixed) - mean_j ** 2) + 1e-5
    return 1 - torch.mean(covariance / torch.sqrt(variance_i * variance_j))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().max() / b.abs().max()).detach())


@pytest.mark.parametrize("shape", [(3, 2, 40), (2, 1, 31, 23), (1, 2, 13, 9, 11), (1, 1, 5, 6, 4)])
@pytest.mark.parametrize("sigma", [1.5, 4, 5])
def test_banded_blur_equals_the_convolution(shape, sigma):
    image = torch.rand(shape, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(image, sigma), reference_blur(image, sigma), rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 1, 37, 29), (1, 1, 17, 20, 18), (2, 2, 15, 12)])
def test_stacked_lncc_equals_five_blurs_in_value_and_gradient(shape):
    torch.manual_seed(0)
    fixed = F.avg_pool3d(torch.rand(shape), 3, 1, 1) if len(shape) == 5 else torch.rand(shape)
    warped = (fixed + 0.3 * torch.rand(shape)).requires_grad_()
    ours, reference = LNCC(4)(warped, fixed), reference_lncc(warped, fixed, 4)
    assert math.isclose(float(ours.detach()), float(reference.detach()), rel_tol=1e-6)
    (grad_ours,), (grad_reference,) = (torch.autograd.grad(v, warped) for v in (ours, reference))
    assert relative_error(grad_ours, grad_reference) < 1e-5


@pytest.mark.parametrize("size", [(1,), (5,), (1, 1), (3, 2), (1, 1, 1), (2, 2, 2), (2, 3, 1)])
def test_small_transposed_convolution_equals_torch_in_value_and_gradient(size):
    torch.manual_seed(0)
    conv = TRANSPOSED[len(size)](12, 5, kernel_size=4, stride=2, padding=1)
    x = torch.randn(2, 12, *size, requires_grad=True)
    ours, reference = small_transposed_conv(x, conv), conv(x)
    assert ours.shape == reference.shape
    assert relative_error(ours, reference) < 1e-6
    grad = torch.randn_like(reference)
    inputs = (x, conv.weight, conv.bias)
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(reference, inputs, grad)):
        assert relative_error(a, b) < 1e-6


def test_tallunet2_fast_paths_equal_torch_layers(monkeypatch):
    """A 3-D U-Net at 17³ has 2- and 1-voxel deepest levels, which take the matmul path, and
    layers with <= 16 output channels, which run channels-last."""
    torch.manual_seed(0)
    net = TallUNet2(3).train()
    nn.init.normal_(net.lastConv.weight, std=0.1)
    moving, fixed = torch.rand(1, 1, 17, 18, 17), torch.rand(1, 1, 17, 18, 17)
    ours = net(moving, fixed)
    gradient_ours = torch.autograd.grad(ours.square().sum(), list(net.parameters()))
    monkeypatch.setattr("equireg.unet.SMALL_TRANSPOSED_VOXELS", 0)
    monkeypatch.setattr("equireg.unet.CHANNELS_LAST_OUT_CHANNELS", 0)
    reference = net(moving, fixed)
    gradient_reference = torch.autograd.grad(reference.square().sum(), list(net.parameters()))
    assert SMALL_TRANSPOSED_VOXELS >= 8 and CHANNELS_LAST_OUT_CHANNELS >= 16 and relative_error(ours, reference) < 1e-5
    largest = max(float(g.abs().max()) for g in gradient_reference)
    assert all(float((a - b).abs().max()) < 1e-5 * largest for a, b in zip(gradient_ours, gradient_reference))

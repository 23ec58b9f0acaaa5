"""TallUNet2: shapes, identity at initialisation, and parity with icon-registration's tallUNet2."""

import pytest
import torch

from equireg.unet import TallUNet2


@pytest.mark.parametrize("shape", [(2, 1, 40), (2, 1, 32, 24), (1, 1, 17, 20, 18)])
def test_fresh_network_predicts_zero_displacement(shape):
    net = TallUNet2(len(shape) - 2)
    out = net(torch.rand(shape), torch.rand(shape))
    assert out.shape == (shape[0], len(shape) - 2, *shape[2:])
    assert torch.count_nonzero(out) == 0


def test_parameter_count_and_multichannel_input():
    assert sum(p.numel() for p in TallUNet2(2).parameters()) == 4_756_902
    net = TallUNet2(2, input_channels=3)
    torch.nn.init.normal_(net.lastConv.weight)
    out = net(torch.rand(2, 3, 33, 31), torch.rand(2, 3, 33, 31))
    assert out.shape == (2, 2, 33, 31) and out.abs().sum() > 0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="dimension"):
        TallUNet2(4)
    with pytest.raises(ValueError, match="channel"):
        TallUNet2(2)(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match=">= 17"):
        TallUNet2(3)(torch.rand(1, 1, 16, 32, 32), torch.rand(1, 1, 16, 32, 32))


@pytest.mark.peers
@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 37, 29), (1, 1, 17, 20, 18)])
def test_upstream_weights_load_strictly_and_give_the_same_output(shape):
    networks = pytest.importorskip("icon_registration.networks")
    dimension = len(shape) - 2
    torch.manual_seed(0)
    upstream = networks.tallUNet2(dimension=dimension)
    torch.manual_seed(0)
    ours = TallUNet2(dimension)
    # same creation order: the same seed gives the same initial weights, in the same order
    assert list(ours.state_dict()) == list(upstream.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), upstream.state_dict().values()))

    torch.nn.init.normal_(upstream.lastConv.weight, std=0.1)  # a non-trivial output to compare
    ours.load_state_dict(upstream.state_dict(), strict=True)
    moving, fixed = torch.rand(shape), torch.rand(shape)
    expected = upstream(moving, fixed)
    assert expected.abs().max() > 1e-2
    # bit for bit, except where our 3-D deepest up convolutions run as a matmul (round-off)
    tolerance = 1e-5 * float(expected.detach().abs().max()) if dimension == 3 else 0
    torch.testing.assert_close(ours(moving, fixed), expected, rtol=0, atol=tolerance)

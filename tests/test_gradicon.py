"""The GradICON baseline: network tree, named configurations, and parity with icon-registration's
GradientICON / GradientICONSparse on the same tree (loss terms, gradients, warped images)."""

import pytest
import torch
from helpers import assert_gradients_match, zero_gradient_parameters

from baselines import gradicon
from equireg import methods
from equireg.losses import GradICONLoss, LNCC
from equireg.transforms import identity_map, warp
from equireg.unet import TallUNet2
from equireg.wrappers import DisplacementField, Downsample, TwoStep


def _unets(net):
    return [m for m in net.modules() if isinstance(m, TallUNet2)]


def test_three_levels_nest_as_upstream():
    net = gradicon.build(2, levels=3)
    assert isinstance(net, TwoStep) and isinstance(net.netPsi, DisplacementField)
    middle = net.netPhi.net
    assert isinstance(net.netPhi, Downsample) and isinstance(middle, TwoStep)
    assert isinstance(middle.netPhi, Downsample) and isinstance(middle.netPhi.net, DisplacementField)
    assert isinstance(middle.netPsi, DisplacementField)
    assert len(_unets(gradicon.build(2, levels=4))) == 4
    refined = gradicon.build(2, levels=3, final_step=True)
    assert len(_unets(refined)) == 4 and isinstance(refined.netPhi, TwoStep)


def test_fresh_network_is_the_identity():
    net = methods.build("gradicon", 2, levels=3)
    moving, fixed = torch.rand(2, 1, 32, 28), torch.rand(2, 1, 32, 28)
    field = net(moving, fixed).field((32, 28))
    torch.testing.assert_close(field, identity_map((32, 28)).expand(2, -1, -1, -1), rtol=0, atol=1e-7)


def test_bad_levels_are_rejected():
    with pytest.raises(ValueError, match="levels"):
        gradicon.build(2, levels=0)


# --- parity with icon-registration ----------------------------------------------------------------

def _upstream_tree(dimension, levels, final_step=False):
    icon = pytest.importorskip("icon_registration")
    networks = pytest.importorskip("icon_registration.networks")

    def step():
        return icon.FunctionFromVectorField(networks.tallUNet2(dimension=dimension))

    net = step()
    for _ in range(levels - 1):
        net = icon.TwoStepRegistration(icon.DownsampleRegistration(net, dimension=dimension), step())
    if final_step:
        net = icon.TwoStepRegistration(net, step())
    return net


def _use_our_identity_maps(upstream):
    """Upstream builds its grid in float64 numpy, we use float32 linspace: they differ by <= 1 ulp.
    GradICON's finite differences (δ = 1e-3) amplify that to ~1e-4 in the gradients, so the
    gradient comparison runs both on the same grid (and checks the grids agree first)."""
    for module in upstream.modules():
        if hasattr(module, "identity_map"):
            ours = identity_map(tuple(module.identity_map.shape[2:]))
            torch.testing.assert_close(ours, module.identity_map, rtol=0, atol=6e-8)
            module.identity_map = ours


@pytest.mark.peers
@pytest.mark.parametrize("dimension, levels, final_step", [(2, 4, False), (3, 3, True)])
def test_upstream_tree_weights_load_strictly_and_seeded_builds_agree(dimension, levels, final_step):
    torch.manual_seed(3)
    upstream = _upstream_tree(dimension, levels, final_step)
    torch.manual_seed(3)
    ours = gradicon.build(dimension, levels=levels, final_step=final_step)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), upstream.state_dict().values()))
    ours.load_state_dict(upstream.state_dict(), strict=True)


TERMS = [("loss", "all_loss"), ("similarity", "similarity_loss"), ("inverse_consistency", "inverse_consistency_loss"),
         ("transform_magnitude", "transform_magnitude"), ("folds", "flips")]


@pytest.mark.peers
@pytest.mark.parametrize("size, levels, batch, sparse", [
    ((32, 28), 3, 2, False), ((32, 32), 3, 2, True),
    ((17, 18, 20), 1, 1, False), ((34, 34, 34), 2, 1, True),  # 3-D U-Nets need >= 17 voxels per axis
])
def test_gradicon_loss_matches_upstream(size, levels, batch, sparse):
    icon_losses = pytest.importorskip("icon_registration.losses")
    dimension = len(size)
    torch.manual_seed(1)
    upstream_net = _upstream_tree(dimension, levels)
    for module in upstream_net.modules():  # non-zero last layers: a non-trivial transform
        if hasattr(module, "lastConv"):
            torch.nn.init.normal_(module.lastConv.weight, std=0.01)
    ours_net = gradicon.build(dimension, levels=levels)
    ours_net.load_state_dict(upstream_net.state_dict(), strict=True)
    shape = (batch, 1, *size)
    upstream = (icon_losses.GradientICONSparse if sparse else icon_losses.GradientICON)(
        upstream_net, icon_losses.LNCC(sigma=2), 1.5)
    upstream.assign_identity_map(shape)
    ours = GradICONLoss(ours_net, LNCC(2), 1.5, sparse=sparse)
    moving, fixed = torch.rand(shape), torch.rand(shape)

    if dimension == 2 and not sparse:  # on upstream's own grid, the loss terms still agree
        torch.manual_seed(5)
        own_grid = upstream(moving, fixed)
        torch.manual_seed(5)
        terms = ours(moving, fixed)
        for key, name in TERMS:
            torch.testing.assert_close(terms[key], getattr(own_grid, name).float(), rtol=1e-5, atol=0)
        upstream_net.zero_grad()
        ours_net.zero_grad()

    _use_our_identity_maps(upstream)
    torch.manual_seed(5)
    expected = upstream(moving, fixed)
    expected.all_loss.backward()
    torch.manual_seed(5)
    terms = ours(moving, fixed)
    terms["loss"].backward()

    assert expected.inverse_consistency_loss > 1e-3 and expected.transform_magnitude > 1e-5
    for key, name in TERMS:
        if key == "folds" and dimension == 3:
            continue  # upstream counts 3-D folds on a backward-difference stencil, ours forward
        torch.testing.assert_close(terms[key], getattr(expected, name).float(), rtol=1e-5, atol=0)
    identity = identity_map(shape[2:])
    zero = zero_gradient_parameters(ours_net, lambda net: net(moving, fixed)(identity))
    # in 3-D our deepest up convolutions are matmuls (equireg.unet.small_transposed_conv) and both
    # directions run as one batch (GradICONLoss.both_directions); the batch norms of 1-8 voxel
    # levels amplify round-off: on the 34³ two-level tree, fp32 gradients differ from float64 by
    # up to 1.3e-4 (relative) with upstream's layers and with ours, so from each other by up to twice that
    assert_gradients_match(ours_net, upstream_net, zero, rtol=1e-5 if dimension < 3 else 3e-4)
    with torch.no_grad():
        torch.testing.assert_close(warp(moving, ours_net(moving, fixed)(identity)), upstream.warped_image_A,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(warp(fixed, ours_net(fixed, moving)(identity)), upstream.warped_image_B,
                                   rtol=1e-5, atol=1e-5)

"""Similarities, the diffusion penalty and the training losses: analytic values and upstream parity.

The GradICON parity with upstream on full network trees lives in test_gradicon.py.
"""

import pytest
import torch
from helpers import assert_gradients_match, zero_gradient_parameters

from equireg import methods
from equireg.losses import (
    LNCC,
    SSD,
    BlurredSSD,
    DiffusionLoss,
    GradICONLoss,
    diffusion_penalty,
    gaussian_blur,
    similarity,
)
from equireg.transforms import Transform, identity_map
from equireg.unet import TallUNet2
from equireg.wrappers import DisplacementField, RegistrationNetwork


def _bump(shape, centre, radius):
    """A smooth bump that is exactly zero beyond ``radius`` voxels: content away from the border."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    r2 = sum((grid[d] - c) ** 2 for d, c in enumerate(centre))
    return (torch.clamp(1 - r2 / radius ** 2, min=0) ** 2)[None, None]


class CentroidShift(RegistrationNetwork):
    """A parameter-free "network": the translation that moves the fixed centroid onto the moving
    one. Swapping the images negates it, so φ_AB and φ_BA are exact inverses."""

    def forward(self, moving, fixed):
        identity = identity_map(moving.shape[2:])
        centroid = lambda image: (image * identity).flatten(2).sum(2) / image.flatten(2).sum(2)  # noqa: E731
        offset = (centroid(moving) - centroid(fixed)).reshape(moving.shape[0], -1, *[1] * (moving.dim() - 2))
        return Transform(lambda x: x + offset)


class Scaling(RegistrationNetwork):
    """x -> factor * x whatever the images: both directions the same, so not inverse-consistent."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, moving, fixed):
        return Transform(lambda x: self.factor * x)


# --- similarities ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 1, 48), (2, 1, 32, 24), (1, 2, 12, 14, 10)])
def test_lncc_of_an_image_with_itself_and_affine_copies(shape):
    torch.manual_seed(0)
    image = 3 * torch.randn(shape)
    lncc = LNCC(sigma=2)
    assert abs(lncc(image, image).item()) < 1e-5
    # invariant to intensity scale (not to offsets: the zero-padded window is not normalised at borders)
    assert abs(lncc(image, 0.5 * image).item()) < 1e-5
    assert abs(lncc(image, -image).item() - 2) < 1e-5


def test_ssd_and_blurred_ssd():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    assert SSD()(a, a) == 0 and BlurredSSD(3)(a, a) == 0
    torch.testing.assert_close(SSD()(a, a + 0.25), torch.tensor(0.0625))
    assert 0 < BlurredSSD(1)(a, b) < SSD()(a, b)  # blurring removes most of independent noise


def test_gaussian_blur_preserves_constants_away_from_the_border():
    blurred = gaussian_blur(torch.ones(1, 1, 30, 30, 30), sigma=2)
    torch.testing.assert_close(blurred[..., 4:-4, 4:-4, 4:-4], torch.ones(1, 1, 22, 22, 22))
    assert blurred[0, 0, 0, 0, 0] < 0.5  # zero padding, as upstream


def test_similarity_factory():
    assert isinstance(similarity("lncc", sigma=4), LNCC)
    assert isinstance(similarity("ssd"), SSD)
    assert similarity("blurred_ssd", sigma=3).sigma == 3
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity("ncc")
    with pytest.raises(ValueError, match="bad arguments"):
        similarity("lncc")
    with pytest.raises(ValueError, match="sigma"):
        LNCC(0)
    with pytest.raises(ValueError, match="differ in shape"):
        SSD()(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


# --- diffusion penalty ---------------------------------------------------------------------------

def test_diffusion_penalty_is_zero_for_constant_and_analytic_for_linear_displacements():
    constant = torch.ones(2, 2, 16, 12) * torch.tensor([0.1, -0.3]).reshape(1, 2, 1, 1)
    assert diffusion_penalty(constant) == 0
    # u = a * x along axis 0 (x in [0, 1]): each step along axis 0 changes u_0 by a / (N0 - 1)
    a, n0 = 0.2, 16
    linear = torch.zeros(1, 2, n0, 12)
    linear[:, 0] = a * identity_map((n0, 12))[0, 0]
    expected = (a / (n0 - 1)) ** 2 / 2 * n0 ** 2  # mean over both channels; upstream scales by N0^2
    torch.testing.assert_close(diffusion_penalty(linear), torch.tensor(expected))


# --- GradICON and diffusion losses ---------------------------------------------------------------

@pytest.mark.parametrize("sparse", [False, True])
def test_gradicon_of_an_exactly_inverse_pair_is_zero(sparse):
    moving = _bump((32, 32), (15, 16), 6)
    fixed = torch.roll(moving, (3, -2), dims=(2, 3))
    terms = GradICONLoss(CentroidShift(), SSD(), lmbda=1.5, sparse=sparse)(moving, fixed)
    assert terms["inverse_consistency"] < 1e-6
    assert terms["similarity"] < 1e-8  # the shift is recovered exactly, both ways
    torch.testing.assert_close(terms["transform_magnitude"], torch.tensor((9 + 4) / 31 ** 2 / 2))
    assert terms["folds"] == 0


@pytest.mark.parametrize("sparse", [False, True])
def test_gradicon_penalises_the_jacobian_of_the_inverse_consistency_error(sparse):
    # φ_AB = φ_BA = 1.1 x: e(x) = x - 1.21 x, so each directional derivative is 0.21 in one component
    image = torch.rand(2, 1, 24, 20)
    terms = GradICONLoss(Scaling(1.1), SSD(), lmbda=2.0, sparse=sparse)(image, image)
    torch.testing.assert_close(terms["inverse_consistency"], torch.tensor(0.21 ** 2), rtol=1e-3, atol=0)
    torch.testing.assert_close(terms["loss"], terms["similarity"] + 2.0 * terms["inverse_consistency"])


def test_gradicon_noise_follows_the_seed():
    net = DisplacementField(TallUNet2(2))
    torch.nn.init.normal_(net.net.lastConv.weight, std=0.01)
    loss = GradICONLoss(net, LNCC(2), lmbda=1.5)
    moving, fixed = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(loss(moving, fixed)["inverse_consistency"].item())
    assert runs[0] == runs[1] != runs[2]


def test_diffusion_loss_of_a_translation_has_no_regularisation():
    moving = _bump((32, 32), (15, 16), 6)
    fixed = torch.roll(moving, (3, -2), dims=(2, 3))
    terms = DiffusionLoss(CentroidShift(), SSD(), lmbda=1.5)(moving, fixed)
    assert terms["regularization"] < 1e-10 and terms["similarity"] < 1e-8
    assert set(terms) == {"loss", "similarity", "regularization", "transform_magnitude", "folds"}


def test_losses_reject_bad_arguments_and_are_registered():
    with pytest.raises(ValueError, match="lmbda"):
        GradICONLoss(Scaling(1.0), SSD(), lmbda=-1)
    with pytest.raises(TypeError, match="similarity"):
        DiffusionLoss(Scaling(1.0), "lncc", lmbda=1)
    with pytest.raises(ValueError, match="equal shape"):
        GradICONLoss(Scaling(1.0), SSD(), lmbda=1)(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 6))
    assert methods.loss_class("gradicon") is GradICONLoss
    assert methods.loss_class("diffusion") is DiffusionLoss


# --- parity with icon-registration ----------------------------------------------------------------

@pytest.mark.peers
@pytest.mark.parametrize("shape", [(2, 1, 40), (2, 1, 32, 24), (1, 2, 12, 14, 10)])
def test_similarities_match_upstream(shape):
    icon_losses = pytest.importorskip("icon_registration.losses")
    torch.manual_seed(0)
    a, b = torch.rand(shape), torch.rand(shape) + 0.3 * torch.rand(shape)
    pairs = [(LNCC(3), icon_losses.LNCC(3)), (SSD(), icon_losses.SSD()),
             (BlurredSSD(2), icon_losses.BlurredSSD(2))]
    for ours, upstream in pairs:
        torch.testing.assert_close(ours(a, b), upstream(a, b), rtol=1e-6, atol=0)


@pytest.mark.peers
def test_diffusion_loss_matches_upstream_diffusion_regularized_net():
    icon = pytest.importorskip("icon_registration")
    networks = pytest.importorskip("icon_registration.networks")
    shape = (2, 1, 32, 24)  # not square: upstream scales every axis by the first axis' size
    torch.manual_seed(0)
    upstream_net = icon.FunctionFromVectorField(networks.tallUNet2(dimension=2))
    torch.nn.init.normal_(upstream_net.net.lastConv.weight, std=0.02)
    ours_net = DisplacementField(TallUNet2(2))
    ours_net.load_state_dict(upstream_net.state_dict(), strict=True)
    upstream = icon.losses.DiffusionRegularizedNet(upstream_net, icon.LNCC(3), 1.5)
    upstream.assign_identity_map(shape)
    ours = DiffusionLoss(ours_net, LNCC(3), 1.5)

    moving, fixed = torch.rand(shape), torch.rand(shape)
    expected = upstream(moving, fixed)
    expected.all_loss.backward()
    terms = ours(moving, fixed)
    terms["loss"].backward()
    for key, name in [("loss", "all_loss"), ("similarity", "similarity_loss"),
                      ("regularization", "bending_energy_loss"), ("transform_magnitude", "transform_magnitude"),
                      ("folds", "flips")]:
        torch.testing.assert_close(terms[key], getattr(expected, name).float(), rtol=1e-5, atol=1e-9)
    assert expected.bending_energy_loss > 1e-4  # a non-trivial field was compared
    identity = identity_map(shape[2:])
    zero = zero_gradient_parameters(ours_net, lambda net: net(moving, fixed)(identity))
    assert_gradients_match(ours_net, upstream_net, zero)

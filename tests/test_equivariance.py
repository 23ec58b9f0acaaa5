"""Translation equivariance, measured (carl.md §1): Ξ and the CARL tree are [W,U]-equivariant;
a U-Net tree and a position-aware Ξ are not. Fresh networks, eval mode, sharp attention."""

import pytest
import torch
import torch.nn.functional as F

from equireg import carl
from equireg.attention import CoordinateAttention
from equireg.equivariance import equivariance_report, measure_equivariance, translate
from equireg.transforms import identity_map, translation
from equireg.wrappers import DisplacementField, RegistrationNetwork

BOUND = 1e-3  # voxels, median over the fixed foreground


def textured(size: int, content: int, seed: int = 0) -> torch.Tensor:
    """A smooth random texture in a ``content``² square at the centre of a zero ``size``² frame."""
    g = torch.Generator().manual_seed(seed)
    texture = F.interpolate(torch.rand(1, 1, content // 2, content // 2, generator=g),
                            size=(content, content), mode="bilinear", align_corners=True)
    image = torch.zeros(1, 1, size, size)
    start = (size - content) // 2
    image[:, :, start:start + content, start:start + content] = texture + 0.1
    return image


def pair(size: int, content: int, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    moving = textured(size, content)
    return moving, translate(moving, offset)


class CentroidAlignment(RegistrationNetwork):
    """``φ(x) = x + c(A) - c(B)``, ``c`` the intensity centroid: exactly [W,U]-equivariant.
    ``sign=-1`` (``x + c(A) + c(B)``) is not."""

    def __init__(self, sign: float = 1.0):
        super().__init__()
        self.sign = sign

    @staticmethod
    def centroid(image):
        grid = identity_map(image.shape[2:], image.device, image.dtype)
        return (grid * image).flatten(2).sum(2) / image.flatten(2).sum(2)

    def forward(self, moving, fixed):
        return translation((self.centroid(moving) - self.sign * self.centroid(fixed))[0])


class PositionAwareXi(CoordinateAttention):
    """A deliberately broken Ξ: absolute position leaks into the features."""

    def featurize(self, image, crop):
        features = super().featurize(image, crop)
        grid = identity_map(features.shape[2:], features.device, features.dtype)
        padding = [0, 0] * self.dimension + [0, features.shape[1] - self.dimension]
        return features + self.feature_scale * F.pad(grid, padding)


def test_translate_is_precomposition():
    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    shifted = translate(image, (1, -1))
    assert shifted[0, 0, 0, 1] == image[0, 0, 1, 0]  # (A∘W)(x) = A(x + w)
    assert shifted[0, 0, 2].abs().sum() == 0 and shifted[0, 0, :, 0].abs().sum() == 0


def test_measurement_convention_on_an_exactly_equivariant_network():
    moving, fixed = pair(24, 10, (2, -3))
    report = equivariance_report(CentroidAlignment(), moving, fixed, (3, 5), (-2, 4))
    assert report["WU"]["median_error_vox"] < 1e-4 and report["UU"]["median_error_vox"] < 1e-4
    broken = equivariance_report(CentroidAlignment(sign=-1.0), moving, fixed, (3, 5), (-2, 4))
    assert broken["WU"]["median_error_vox"] > 1.0, broken


def test_xi_is_WU_equivariant():
    torch.manual_seed(0)
    xi = carl.coordinate_attention_network(2, feature_channels=16, feature_scale=100.0)
    moving, fixed = pair(24, 12, (3, -2))
    report = equivariance_report(xi, moving, fixed, (4, 7), (-3, 2))
    print("xi", report)
    assert report["WU"]["median_error_vox"] < BOUND and report["UU"]["median_error_vox"] < BOUND


def test_position_aware_xi_is_not_WU_equivariant():
    torch.manual_seed(0)
    broken = DisplacementField(PositionAwareXi(2, feature_channels=16, feature_scale=100.0))
    moving, fixed = pair(24, 12, (3, -2))
    error = measure_equivariance(broken, moving, fixed, (4, 7), (-3, 2))
    print("position-aware xi [W,U]", error)
    assert error["median_error_vox"] > BOUND


# Ξ runs at 1/4 resolution: shifts are multiples of 4, and padded sizes are 4n + 1 so that the
# coarse [0, 1] grid has exactly 1/4 the spacing ratio of the fine one (ICON's coordinates put
# the first and last voxel at 0 and 1; with other sizes a coarse-voxel shift is not 4 voxels).
CARL_SIZE, CARL_SHIFT_MOVING, CARL_SHIFT_FIXED = 49, (4, 8), (-4, 4)  # margins (4, 8): 57 × 65


def test_carl_tree_is_WU_equivariant():
    torch.manual_seed(0)
    net = carl.build_carl(2, feature_channels=16, feature_scale=100.0)
    moving, fixed = pair(CARL_SIZE, 24, (4, -4))
    report = equivariance_report(net, moving, fixed, CARL_SHIFT_MOVING, CARL_SHIFT_FIXED)
    print("carl", report)
    assert report["WU"]["median_error_vox"] < BOUND and report["UU"]["median_error_vox"] < BOUND
    assert net.training  # the measurement ran in eval mode and gave the mode back


def test_unet_only_is_not_WU_equivariant():
    torch.manual_seed(0)
    net = carl.build_unet_only(2)
    # a fresh tallUNet2 predicts exactly zero; give it a non-trivial output
    torch.nn.init.normal_(net.net.net.net.lastConv.weight, std=0.1)
    moving, fixed = pair(CARL_SIZE, 24, (4, -4))
    error = measure_equivariance(net, moving, fixed, CARL_SHIFT_MOVING, CARL_SHIFT_FIXED)
    print("unet_only [W,U]", error)
    assert error["median_error_vox"] > BOUND


def test_bad_arguments_are_named():
    moving, fixed = pair(16, 8, (1, 1))
    net = CentroidAlignment()
    with pytest.raises(ValueError, match="shift_moving"):
        measure_equivariance(net, moving, fixed, (1,), (0, 0))
    with pytest.raises(ValueError, match="shift_fixed"):
        measure_equivariance(net, moving, fixed, (0, 0), (0.5, 0))
    with pytest.raises(ValueError, match="margin"):
        measure_equivariance(net, moving, fixed, (0, 0), (0, 0), margin=(1, -1))
    with pytest.raises(ValueError, match="foreground"):
        measure_equivariance(net, moving, fixed, (0, 0), (0, 0), foreground=torch.zeros_like(fixed))

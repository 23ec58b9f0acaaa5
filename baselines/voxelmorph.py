"""VoxelMorph (the paper's VxmDense, voxelmorph 0.2) as an equireg registration network.

Our own implementation of the published architecture (baselines.md): a 4-level U-Net on
``cat(moving, fixed)``, a 3×3 flow head initialised N(0, 1e-5), a stationary velocity field
integrated at half resolution by scaling and squaring, and a zero-padded spatial transformer.
Module names (``unet_model.encoder.i.0.main``, ..., ``flow``, ``integrate``, ``transformer``)
match upstream, so an upstream state dict loads with ``strict=True``.

Internally fields are in voxel units with channel ``d`` along array axis ``d`` (upstream's
convention); :meth:`VxmDense.forward` converts the final displacement to equireg's [0, 1]
convention and returns it as a :class:`~equireg.transforms.DisplacementTransform`. Warping with
it and ``padding_mode="zeros"`` reproduces upstream's warped image; equireg's default (border)
differs only where ``phi`` leaves the moving image.

Sizes: the U-Net pools four times and the velocity lives at half resolution, so upstream needs
every size to divide by 16. We pad both images with zeros, centred, to the next multiple of 16,
run the network, and crop the displacement back. Because displacements are in voxels, the
cropped field is exactly the transform on the original grid.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from equireg import devices
from equireg.transforms import DisplacementTransform, Transform, voxels_to_coordinates
from equireg.wrappers import RegistrationNetwork

ENCODER_FEATURES = (16, 32, 32, 32)
DECODER_FEATURES = (32, 32, 32, 32, 32, 16, 16)


_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class ConvBlock(nn.Module):
    """3×3 convolution followed by LeakyReLU(0.2)."""

    def __init__(self, dimension: int, in_channels: int, out_channels: int):
        super().__init__()
        self.main = _CONV[dimension](in_channels, out_channels, 3, 1, 1)
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.main(x))


class UNet(nn.Module):
    """VoxelMorph's U-Net: per level conv + max-pool; decoder conv, nearest ×2, concat skip;
    then full-resolution convs for the decoder features beyond the number of levels."""

    def __init__(self, dimension: int, in_channels: int, encoder: Sequence[int], decoder: Sequence[int]):
        super().__init__()
        if len(decoder) < len(encoder):
            raise ValueError(f"decoder features {list(decoder)} must be at least as many as "
                             f"encoder features {list(encoder)}")
        self.dimension = dimension
        channels = in_channels
        skips = []
        self.encoder = nn.ModuleList()
        for features in encoder:
            self.encoder.append(nn.ModuleList([ConvBlock(dimension, channels, features)]))
            channels = features
            skips.append(channels)
        self.decoder = nn.ModuleList()
        for features, skip in zip(decoder[:len(encoder)], reversed(skips)):
            self.decoder.append(nn.ModuleList([ConvBlock(dimension, channels, features)]))
            channels = features + skip
        self.remaining = nn.ModuleList()
        for features in decoder[len(encoder):]:
            self.remaining.append(ConvBlock(dimension, channels, features))
            channels = features
        self.final_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = {2: F.max_pool2d, 3: F.max_pool3d}[self.dimension]
        skips = []
        for (block,) in self.encoder:
            x = block(x)
            skips.append(x)
            x = pool(x, 2)
        for (block,) in self.decoder:
            x = F.interpolate(block(x), scale_factor=2, mode="nearest")
            x = torch.cat([x, skips.pop()], dim=1)
        for block in self.remaining:
            x = block(x)
        return x


def warp_voxels(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at ``x + displacement(x)`` (voxel units), bilinear, zeros outside.

    Normalises to [-1, 1] with the same arithmetic as upstream's SpatialTransformer so results
    agree bit for bit.
    """
    shape = displacement.shape[2:]
    axes = [torch.arange(n, device=displacement.device, dtype=displacement.dtype) for n in shape]
    locations = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None] + displacement
    normalised = torch.stack([2 * (locations[:, d] / (n - 1) - 0.5) for d, n in enumerate(shape)], -1)
    return F.grid_sample(image, normalised.flip(-1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


class SpatialTransformer(nn.Module):
    """Warp by a voxel displacement (:func:`warp_voxels`).

    Upstream stores its sampling grid as a buffer fixed to one input size; ours is computed from
    the input, so a stored ``grid`` entry is accepted on loading and ignored.
    """

    def forward(self, image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
        return warp_voxels(image, displacement)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "grid", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class VecInt(nn.Module):
    """Scaling and squaring: ``v <- v / 2^steps``, then ``steps`` times ``v <- v + v o (id + v)``."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.transformer = SpatialTransformer()

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        displacement = velocity * (1.0 / 2 ** self.steps)
        for _ in range(self.steps):
            displacement = displacement + self.transformer(displacement, displacement)
        return displacement


def resize_field(field: torch.Tensor, factor: float) -> torch.Tensor:
    """Resample a voxel displacement by ``factor`` and rescale its values to the new voxels
    (upstream's ResizeTransform: shrink then scale, or scale then enlarge)."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[field.dim() - 2]
    if factor < 1:
        return factor * F.interpolate(field, scale_factor=factor, mode=mode, align_corners=True)
    if factor > 1:
        return F.interpolate(factor * field, scale_factor=factor, mode=mode, align_corners=True)
    return field


class VoxelMorphFields(NamedTuple):
    """Everything one forward pass computes, in voxel units, array-axis channel order."""

    warped: torch.Tensor        # moving warped onto the fixed grid (zeros outside), original size
    velocity: torch.Tensor      # pre-integration flow at 1/downsize of the padded size
    displacement: torch.Tensor  # final displacement on the original fixed grid


class VxmDense(RegistrationNetwork):
    """The VoxelMorph network. ``forward(moving, fixed)`` returns ``phi`` with ``moving o phi ~ fixed``.

    ``integration_steps = 0`` gives the non-diffeomorphic variant (the flow is the displacement).
    ``precision`` is that of the U-Net and flow convolutions (:func:`equireg.devices.set_precision`);
    integration and warping stay float32.
    """

    precision = "fp32"

    def __init__(self, dimension: int, encoder: Sequence[int] = ENCODER_FEATURES,
                 decoder: Sequence[int] = DECODER_FEATURES, integration_steps: int = 7,
                 integration_downsize: int = 2, channels: int = 1):
        super().__init__()
        if dimension not in (2, 3):
            raise ValueError(f"VxmDense needs dimension 2 or 3, got {dimension}")
        if integration_steps < 0:
            raise ValueError(f"integration_steps must be >= 0, got {integration_steps}")
        if integration_downsize < 1 or int(integration_downsize) != integration_downsize:
            raise ValueError(f"integration_downsize must be a positive integer, got {integration_downsize}")
        self.dimension = dimension
        self.channels = channels
        self.unet_model = UNet(dimension, 2 * channels, encoder, decoder)
        self.flow = _CONV[dimension](self.unet_model.final_features, dimension, 3, padding=1)
        nn.init.normal_(self.flow.weight, 0.0, 1e-5)
        nn.init.zeros_(self.flow.bias)
        self.integration_downsize = int(integration_downsize) if integration_steps > 0 else 1
        self.integrate = VecInt(integration_steps) if integration_steps > 0 else None
        self.transformer = SpatialTransformer()
        self.size_multiple = math.lcm(2 ** len(encoder), self.integration_downsize)

    def _check(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        if fixed.dim() != self.dimension + 2 or moving.shape != fixed.shape or fixed.shape[1] != self.channels:
            raise ValueError(f"VxmDense({self.dimension}-D, {self.channels} channel) needs moving and fixed "
                             f"of shape [B, {self.channels}, *spatial] with equal spatial sizes; got "
                             f"moving {tuple(moving.shape)}, fixed {tuple(fixed.shape)}")

    def _padding(self, shape: Sequence[int]) -> list[tuple[int, int]]:
        """(before, after) zeros per axis reaching the next multiple of ``size_multiple``, centred."""
        pads = []
        for n in shape:
            extra = -n % self.size_multiple
            pads.append((extra // 2, extra - extra // 2))
        return pads

    def fields(self, moving: torch.Tensor, fixed: torch.Tensor) -> VoxelMorphFields:
        """Run the network; see :class:`VoxelMorphFields`."""
        self._check(moving, fixed)
        shape = fixed.shape[2:]
        pads = self._padding(shape)
        flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
        x = F.pad(torch.cat([moving, fixed], dim=1), flat)
        with devices.convolutions(self.precision, x) as layout:
            flow = self.flow(self.unet_model(layout)).to(x.dtype).contiguous()
        velocity = resize_field(flow, 1.0 / self.integration_downsize)
        displacement = velocity
        if self.integrate is not None:
            displacement = resize_field(self.integrate(velocity), float(self.integration_downsize))
        crop = (slice(None), slice(None), *[slice(before, before + n) for (before, _), n in zip(pads, shape)])
        displacement = displacement[crop]
        return VoxelMorphFields(self.transformer(moving, displacement), velocity, displacement)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:
        displacement = self.fields(moving, fixed).displacement
        return DisplacementTransform(voxels_to_coordinates(displacement, displacement.shape[2:]))


def build(dimension: int, **options) -> VxmDense:
    """The registry's builder: ``VxmDense(dimension, **options)`` (defaults: the paper's network)."""
    return VxmDense(dimension, **options)


# --- training loss ------------------------------------------------------------------------------

def gradient_l2(field: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference, averaged over the spatial axes (upstream's Grad('l2'))."""
    dimension = field.dim() - 2
    return sum(torch.diff(field, dim=2 + axis).pow(2).mean() for axis in range(dimension)) / dimension


class NCC(nn.Module):
    """Upstream's local normalised cross-correlation with a box window (default 9 per axis).

    Returns ``-mean(cc)`` like upstream (so a perfect match gives -1), with
    ``cc = cov^2 / (var_I var_J + 1e-5)`` from window sums over zero-padded images.
    """

    def __init__(self, window: int = 9):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"NCC window must be a positive odd integer, got {window}")
        self.window = window

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        dimension = fixed.dim() - 2
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dimension]
        kernel = torch.ones(1, 1, *[self.window] * dimension, dtype=fixed.dtype, device=fixed.device)
        size = float(self.window ** dimension)

        def box(x: torch.Tensor) -> torch.Tensor:
            return conv(x, kernel, padding=self.window // 2)

        i, j = fixed, warped
        i_sum, j_sum = box(i), box(j)
        i2_sum, j2_sum, ij_sum = box(i * i), box(j * j), box(i * j)
        u_i, u_j = i_sum / size, j_sum / size
        cross = ij_sum - u_j * i_sum - u_i * j_sum + u_i * u_j * size
        i_var = i2_sum - 2 * u_i * i_sum + u_i * u_i * size
        j_var = j2_sum - 2 * u_j * j_sum + u_j * u_j * size
        return -torch.mean(cross * cross / (i_var * j_var + 1e-5))


class VoxelMorphLoss(nn.Module):
    """Upstream's objective: ``sim(warped, fixed) + lmbda * downsize * Grad_l2(velocity)``.

    ``similarity`` is a ``sim(warped, fixed) -> scalar`` from :func:`equireg.losses.similarity`;
    ``"ssd"`` there is exactly upstream's MSE (``mean((warped - fixed)^2)``). ``ncc_window``
    replaces it by upstream's box-window :class:`NCC`. The paper trains MSE with
    ``lmbda = 0.01`` and NCC (window 9) with ``lmbda = 1``. As upstream, the warped image is zero
    outside the moving image and the penalty is multiplied by the integration downsize factor
    (``loss_mult``); it covers the whole velocity field, including any size padding.
    """

    def __init__(self, net: VxmDense, similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 lmbda: float, ncc_window: int | None = None):
        super().__init__()
        if not isinstance(net, VxmDense):
            raise ValueError(f"VoxelMorphLoss needs a VxmDense network, got {type(net).__name__}")
        self.regis_net = net
        self.similarity = NCC(ncc_window) if ncc_window is not None else similarity
        self.lmbda = lmbda

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        fields = self.regis_net.fields(moving, fixed)
        similarity = self.similarity(fields.warped, fixed)
        regularization = gradient_l2(fields.velocity) * self.regis_net.integration_downsize
        return {"loss": similarity + self.lmbda * regularization,
                "similarity": similarity, "regularization": regularization}

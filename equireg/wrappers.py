"""Networks as transforms: the registration-module algebra of ICON and CARL (carl.md §3).

A *registration network* is an ``nn.Module`` with ``forward(moving, fixed) -> Transform`` such
that ``moving o phi ~ fixed``. The wrappers here build trees of such networks. Attribute names
(``net``, ``netPhi``, ``netPsi``) follow icon-registration so upstream state dicts load strictly.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from equireg.transforms import DisplacementTransform, Transform, identity_map, warp


@contextmanager
def features_shared(net: nn.Module) -> Iterator[None]:
    """Let the parts of ``net`` that can (those with a ``sharing_features`` context, i.e. Ξ) reuse
    the features of an image they have seen within this block: for losses that run ``net(A, B)``
    and ``net(B, A)`` with the same weights. The results are those of computing everything twice.
    """
    with ExitStack() as stack:
        for module in net.modules():
            if hasattr(module, "sharing_features"):
                stack.enter_context(module.sharing_features())
        yield


class RegistrationNetwork(nn.Module):
    """Base class: ``forward(moving, fixed)`` returns a :class:`~equireg.transforms.Transform`."""

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:  # pragma: no cover
        raise NotImplementedError


class DisplacementField(RegistrationNetwork):
    """Wrap ``net(moving, fixed) -> displacement [B, D, *S]`` (in [0, 1] units) as a transform.

    icon-registration calls this ``FunctionFromVectorField``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:
        return DisplacementTransform(self.net(moving, fixed))


class TwoStep(RegistrationNetwork):
    """``phi = Phi(A, B); psi = Psi(A o phi, B); return phi o psi`` (icon's TwoStepRegistration).

    If ``Phi`` is [W,U]-equivariant and ``Psi`` is [U,U]-equivariant, so is the result.
    """

    def __init__(self, first: RegistrationNetwork, second: RegistrationNetwork):
        super().__init__()
        self.netPhi = first
        self.netPsi = second

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:
        phi = self.netPhi(moving, fixed)
        moved = warp(moving, phi(identity_map(moving.shape[2:], moving.device, moving.dtype)))
        psi = self.netPsi(moved, fixed)
        return phi @ psi


def average_pool(image: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Average-pool every spatial axis by ``factor`` with ceil mode (ICON's downsampling)."""
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[image.dim() - 2]
    return pool(image, factor, ceil_mode=True)


class Downsample(RegistrationNetwork):
    """Run ``net`` on both images average-pooled by 2; the transform is resolution independent."""

    def __init__(self, net: RegistrationNetwork):
        super().__init__()
        self.net = net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:
        return self.net(average_pool(moving), average_pool(fixed))


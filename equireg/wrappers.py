"""Networks as transforms: the registration-module algebra of ICON and CARL (carl.md §3).

A *registration network* is an ``nn.Module`` with ``forward(moving, fixed) -> Transform`` such
that ``moving o phi ~ fixed``. The wrappers here build trees of such networks. Attribute names
(``net``, ``netPhi``, ``netPsi``) follow icon-registration so upstream state dicts load strictly.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from equireg.transforms import DisplacementTransform, Transform, identity_map, warp


@contextmanager
def features_shared(net: nn.Module, groups: int = 1) -> Iterator[None]:
    """Let the parts of ``net`` that can (those with a ``sharing_features`` context, i.e. Ξ) reuse
    the features of an image they have seen within this block: for losses that run ``net(A, B)``
    and ``net(B, A)`` with the same weights, as two calls or as one call on batches of ``groups``
    groups (``net(cat(A, B), cat(B, A))``: an image is also recognised with its groups in reverse
    order). The results are those of computing everything twice.
    """
    with ExitStack() as stack:
        for module in net.modules():
            if hasattr(module, "sharing_features"):
                stack.enter_context(module.sharing_features(groups))
        yield


def only_batch_norm_state(net: nn.Module) -> bool:
    """Whether batch norm layers are the only modules of ``net`` that keep state (buffers): then
    replaying or grouping them reproduces everything a forward pass changes."""
    return all(isinstance(module, nn.modules.batchnorm._BatchNorm)
               for module in net.modules() if any(True for _ in module.buffers(recurse=False)))


def _grouped_batch_norm(norm: nn.Module, forward, groups: int, x: torch.Tensor) -> torch.Tensor:
    if not norm.training:
        return forward(x)
    return torch.cat([forward(part) for part in x.chunk(groups)])


@contextmanager
def batch_norm_groups(net: nn.Module, groups: int) -> Iterator[None]:
    """Within this block, every batch norm of ``net`` in training mode normalises each of
    ``groups`` equal slices of its batch by that slice's own statistics and updates its running
    statistics slice after slice: one call on ``cat(A, B)`` does what ``net(A)`` then ``net(B)``
    would do."""
    norms = [module for module in net.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:  # an instance attribute shadows the class's forward until deleted
        norm.forward = functools.partial(_grouped_batch_norm, norm, norm.forward, groups)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def directions_batchable(net: nn.Module) -> bool:
    """Whether ``net(cat(A, B), cat(B, A))`` under :func:`batch_norm_groups` computes exactly
    ``net(A, B)`` and ``net(B, A)``, split by ``Transform.select``: a tree of the wrappers below over
    displacement networks, whose only state is batch norm and which draw no random numbers."""
    def tree(module: nn.Module) -> bool:
        if isinstance(module, DisplacementField):
            return True
        if isinstance(module, TwoStep):
            return tree(module.netPhi) and tree(module.netPsi)
        return isinstance(module, Downsample) and tree(module.net)

    random = any(isinstance(module, nn.modules.dropout._DropoutNd) for module in net.modules())
    return only_batch_norm_state(net) and not random and tree(net)


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


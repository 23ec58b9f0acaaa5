"""CARL's network trees (carl.md §3), registered in :mod:`equireg.methods`.

``Ξ`` is :class:`~equireg.attention.CoordinateAttention`, ``Ψ`` a
:class:`~equireg.unet.TallUNet2` displacement step; both are wrapped in
:class:`~equireg.wrappers.DisplacementField`. Ξ always runs at 1/4 of the input resolution.

The CVPR tree is ``TwoStep{TwoStep{Down{TwoStep{Down{Ξ}, Ψ₁}}, Ψ₂}, Ψ₃}``: its outer
``netPhi`` is the two-stage network trained first and its outer ``netPsi`` is Ψ₃, added in
the last stage of the schedule, so a training stage with ``module: netPhi`` trains CARL
without Ψ₃ and ``module: ""`` the whole tree.
"""

from __future__ import annotations

from torch import nn

from equireg.attention import DEFAULT_CHUNK_SIZE, CoordinateAttention, Featurizer
from equireg.unet import TallUNet2
from equireg.wrappers import DisplacementField, Downsample, RegistrationNetwork, TwoStep

#: Ξ runs on images average-pooled by this factor (two Downsamples); it is exactly equivariant to
#: shifts of whole coarse cells on sizes N with N - 1 divisible by it (equireg.equivariance)
XI_POOLING = 4


def coordinate_attention_network(
    dimension: int, feature_channels: int = 128, feature_scale: float = 4.0, padding: int = 9,
    chunk_size: int = DEFAULT_CHUNK_SIZE, input_channels: int = 1,
) -> DisplacementField:
    """Ξ as a registration network (state-dict compatible with upstream's attention step)."""
    return DisplacementField(CoordinateAttention(
        dimension, feature_channels=feature_channels, padding=padding, feature_scale=feature_scale,
        chunk_size=chunk_size, input_channels=input_channels))


def unet_network(dimension: int, input_channels: int = 1) -> DisplacementField:
    """Ψ: ICON's tallUNet2 predicting a displacement field."""
    return DisplacementField(TallUNet2(dimension, input_channels=input_channels))


def build_carl(dimension: int, **options) -> RegistrationNetwork:
    """CVPR CARL: ``TwoStep{TwoStep{Down{TwoStep{Down{Ξ}, Ψ₁}}, Ψ₂}, Ψ₃}``.

    ``options`` are those of :func:`coordinate_attention_network`; ``input_channels`` also
    goes to the U-Nets. ``net.netPhi`` is the stage-1/2 network, ``net.netPsi`` is Ψ₃.
    """
    xi = coordinate_attention_network(dimension, **options)
    channels = options.get("input_channels", 1)
    inner = TwoStep(Downsample(xi), unet_network(dimension, channels))
    two_stage = TwoStep(Downsample(inner), unet_network(dimension, channels))
    return TwoStep(two_stage, unet_network(dimension, channels))


def build_carl_draft(dimension: int, **options) -> RegistrationNetwork:
    """The earlier draft's tree: ``TwoStep{TwoStep{Down{Ξ}, Ψ₁}, Ψ₂}`` (Ξ at 1/2 resolution)."""
    xi = coordinate_attention_network(dimension, **options)
    channels = options.get("input_channels", 1)
    inner = TwoStep(Downsample(xi), unet_network(dimension, channels))
    return TwoStep(inner, unet_network(dimension, channels))


def build_transformer_only(dimension: int, **options) -> RegistrationNetwork:
    """2-D ablation "just transformer": ``Down{Down{Ξ}}``."""
    return Downsample(Downsample(coordinate_attention_network(dimension, **options)))


def build_unet_only(dimension: int, input_channels: int = 1) -> RegistrationNetwork:
    """2-D ablation "just displacement": ``Down{Down{Ψ}}``, the transformer-only tree with a U-Net."""
    return Downsample(Downsample(unet_network(dimension, input_channels)))


# --- named access to the parts of a tree (instead of attribute chains like net.netPhi.netPhi.net...) ---

def _only(net: nn.Module, kind: type) -> nn.Module:
    found = [module for module in net.modules() if isinstance(module, kind)]
    if len(found) != 1:
        raise ValueError(f"expected one {kind.__name__} in the network, found {len(found)}")
    return found[0]


def attention(net: nn.Module) -> CoordinateAttention:
    """Ξ's coordinate attention in a CARL tree (or an ablation)."""
    return _only(net, CoordinateAttention)


def featurizer(net: nn.Module) -> Featurizer:
    """Ξ's featurizer in a CARL tree."""
    return _only(net, Featurizer)


def displacement_steps(net: nn.Module) -> list[TallUNet2]:
    """The U-Net steps Ψ of a tree, in the order they run (coarsest first)."""
    # modules() visits netPhi before netPsi at every TwoStep: the order in which they run
    return [module for module in net.modules() if isinstance(module, TallUNet2)]

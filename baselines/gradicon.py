"""GradICON baseline (Tian et al., CVPR 2023): a coarse-to-fine tree of :class:`TallUNet2` steps
trained with :class:`equireg.losses.GradICONLoss`.

``build(dimension, levels)`` nests the networks as upstream's training scripts do
(icon-registration ``retina_registration.py``, ``pretrained_models/lung_ct.py``)::

    net = DisplacementField(TallUNet2)                             # level 1, coarsest
    repeat levels - 1 times:
        net = TwoStep(Downsample(net), DisplacementField(TallUNet2))

so ``levels=3`` is ``TwoStep{Down{TwoStep{Down{Ψ1}, Ψ2}}, Ψ3}`` with Ψ1 at 1/4 resolution.
``final_step=True`` appends one more full-resolution step, ``TwoStep{net, Ψ}`` (the lung model's
4th step, added for the second training stage). The tree's parameter names and initialisation
order are upstream's, so a seeded build equals upstream's and its state dicts load strictly.

The settings trained by the workflow are those of the presets in ``config/config.yaml``.
"""

from __future__ import annotations

from equireg.unet import TallUNet2
from equireg.wrappers import DisplacementField, Downsample, RegistrationNetwork, TwoStep


def _step(dimension: int, input_channels: int) -> DisplacementField:
    return DisplacementField(TallUNet2(dimension, input_channels))


def build(dimension: int, levels: int = 3, final_step: bool = False, input_channels: int = 1) -> RegistrationNetwork:
    """The GradICON network: ``levels`` resolutions (each a factor 2), optionally one more
    full-resolution step. A fresh network returns the identity transform."""
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"gradicon.build: levels must be a positive integer, got {levels!r}")
    net: RegistrationNetwork = _step(dimension, input_channels)
    for _ in range(levels - 1):
        net = TwoStep(Downsample(net), _step(dimension, input_channels))
    if final_step:
        net = TwoStep(net, _step(dimension, input_channels))
    return net

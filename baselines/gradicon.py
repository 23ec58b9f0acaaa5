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

Named configurations, as plain dicts (upstream's published settings):

* ``RETINA``: 2-D, 4 levels, BlurredSSD σ = 3, λ = 0.2, Adam lr 1e-3, 90 epochs, batch 10.
* ``LUNG``: 3-D 175³, 3 levels trained first, then the full-resolution 4th step
  (``final_step``); sparse GradICON, LNCC σ = 5, λ = 1.5, Adam lr 5e-5, 50k steps per stage,
  batch 16.

Keys: ``dimension``; ``build`` (keyword arguments of :func:`build`); ``loss`` (registry name in
:data:`equireg.methods.LOSSES`) with ``loss_options`` (extra keyword arguments); ``similarity``
(arguments of :func:`equireg.losses.similarity`); ``lmbda``; ``lr``; training length and batch.
"""

from __future__ import annotations

from typing import Any

from equireg.unet import TallUNet2
from equireg.wrappers import DisplacementField, Downsample, RegistrationNetwork, TwoStep

RETINA: dict[str, Any] = {
    "dimension": 2,
    "build": {"levels": 4},
    "loss": "gradicon",
    "loss_options": {"sparse": False},
    "similarity": {"name": "blurred_ssd", "sigma": 3},
    "lmbda": 0.2,
    "lr": 1e-3,
    "epochs": 90,
    "batch_size": 10,
}

LUNG: dict[str, Any] = {
    "dimension": 3,
    "input_shape": (175, 175, 175),
    "build": {"levels": 3},
    "second_stage_build": {"levels": 3, "final_step": True},
    "loss": "gradicon",
    "loss_options": {"sparse": True},
    "similarity": {"name": "lncc", "sigma": 5},
    "lmbda": 1.5,
    "lr": 5e-5,
    "steps_per_stage": 50_000,
    "batch_size": 16,
}


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

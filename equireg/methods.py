"""The method registry: one line per method, name -> builder (imported lazily).

A builder is ``build(dimension: int, **options) -> RegistrationNetwork``; ``options`` come from
the method's section of the workflow config. Training losses are looked up the same way, by the
``loss`` key of a training stage. Adding a method touches its own module and one line here.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

# name -> "module:function"
METHODS: dict[str, str] = {
    "gradicon": "baselines.gradicon:build",
    "voxelmorph": "baselines.voxelmorph:build",
    "classical": "baselines.classical:build",
    "carl": "equireg.carl:build_carl",
    "carl_draft": "equireg.carl:build_carl_draft",
    "transformer_only": "equireg.carl:build_transformer_only",
    "unet_only": "equireg.carl:build_unet_only",
}

# loss name -> "module:class"; every class is constructed as ``cls(net, similarity, lmbda, **extra)``
# and called as ``loss(moving, fixed) -> dict[str, Tensor]`` with the total under "loss".
LOSSES: dict[str, str] = {
    "gradicon": "equireg.losses:GradICONLoss",
    "diffusion": "equireg.losses:DiffusionLoss",
    "voxelmorph": "baselines.voxelmorph:VoxelMorphLoss",
}


def _resolve(table: dict[str, str], name: str, kind: str) -> Callable[..., Any]:
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    module, attribute = table[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def names() -> list[str]:
    """All registered method names."""
    return sorted(METHODS)


def build(name: str, dimension: int, **options: Any) -> nn.Module:
    """Build the registration network of method ``name`` for ``dimension``-D images."""
    return _resolve(METHODS, name, "method")(dimension, **options)


def loss_class(name: str) -> Callable[..., nn.Module]:
    """The training loss class registered under ``name``."""
    return _resolve(LOSSES, name, "loss")

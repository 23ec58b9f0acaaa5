"""The method registry: name -> builder, and whether the method trains.

A builder is ``build(dimension: int, **options) -> RegistrationNetwork``; ``options`` come from
the method's section of the workflow config. The built-in methods are listed here; a package of
your own adds methods through the entry-point group ``equireg.methods``::

    [project.entry-points."equireg.methods"]
    my_method = "my_package.networks:build"

A builder whose attribute ``trains`` is ``False`` is evaluated as it is built (like the classical
baseline); otherwise the workflow trains it with the stages of its config section. The config
schema, the workflow and the CLI all take their method lists from :func:`registry`.

Training losses are looked up the same way, by the ``loss`` key of a training stage.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from torch import nn

ENTRY_POINT_GROUP = "equireg.methods"


@dataclass(frozen=True)
class Method:
    """A registered method: where its builder lives (``"module:function"``) and whether it trains."""

    builder: str
    trains: bool = True


METHODS: dict[str, Method] = {
    "gradicon": Method("baselines.gradicon:build"),
    "voxelmorph": Method("baselines.voxelmorph:build"),
    "classical": Method("baselines.classical:build", trains=False),
    "carl": Method("equireg.carl:build_carl"),
    "carl_draft": Method("equireg.carl:build_carl_draft"),
    "transformer_only": Method("equireg.carl:build_transformer_only"),
    "unet_only": Method("equireg.carl:build_unet_only"),
}

#: how methods are named to readers (figures, leaderboards, the report), in the order figures draw them;
#: a method not listed (a plugin) keeps its registered name
DISPLAY_NAMES = {"unregistered": "unregistered", "carl": "CARL", "carl_draft": "CARL (draft tree)",
                 "gradicon": "GradICON", "voxelmorph": "VoxelMorph", "classical": "classical (SimpleITK)",
                 "transformer_only": "ablation: transformer only", "unet_only": "ablation: U-Net only"}

# loss name -> "module:class"; every class is constructed as ``cls(net, similarity, lmbda, **extra)``
# and called as ``loss(moving, fixed) -> dict[str, Tensor]`` with the total under "loss".
LOSSES: dict[str, str] = {
    "gradicon": "equireg.losses:GradICONLoss",
    "diffusion": "equireg.losses:DiffusionLoss",
    "voxelmorph": "baselines.voxelmorph:VoxelMorphLoss",
}


def _load(reference: str) -> Callable[..., Any]:
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)


def registry() -> dict[str, Method]:
    """The built-in methods and those of installed plugins (entry-point group ``equireg.methods``).

    A plugin that reuses a built-in name, or whose entry point does not load, is an error naming it.
    """
    found = dict(METHODS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found:
            raise ValueError(f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}): "
                             f"method {entry.name!r} is already registered")
        try:
            builder = entry.load()
        except Exception as error:  # a broken plugin must say which one it is
            raise ValueError(f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}) does not load: "
                             f"{error.__class__.__name__}: {error}") from None
        found[entry.name] = Method(entry.value, trains=bool(getattr(builder, "trains", True)))
    return found


def display_name(method: str) -> str:
    """The name readers see for ``method`` (``DISPLAY_NAMES``)."""
    return DISPLAY_NAMES.get(method, method)


def names() -> list[str]:
    """All registered method names."""
    return sorted(registry())


def trained() -> list[str]:
    """The registered methods that the workflow trains."""
    return sorted(name for name, method in registry().items() if method.trains)


def build(name: str, dimension: int, **options: Any) -> nn.Module:
    """Build the registration network of method ``name`` for ``dimension``-D images."""
    known = registry()
    if name not in known:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(known))}")
    return _load(known[name].builder)(dimension, **options)


def loss_class(name: str) -> Callable[..., nn.Module]:
    """The training loss class registered under ``name``."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    return _load(LOSSES[name])

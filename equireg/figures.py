"""One function per figure, each drawn from the result tables (or saved example arrays).

All figures share one style (:func:`style`) and are written as PNG and PDF with fixed metadata,
so reruns produce the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from equireg import tables  # noqa: E402
from equireg.data.datasets import load_arrays  # noqa: E402
from equireg.files import atomic_path  # noqa: E402

CONDITION_NAMES = {"none": "not shifted", "shift": "shifted", "shift_scale": "shifted+scaled"}


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 120, "savefig.bbox": "tight", "image.cmap": "gray"})


def save(figure: plt.Figure, png: str | Path, pdf: str | Path) -> None:
    """Write PNG and PDF atomically, without timestamps in the metadata."""
    with atomic_path(png) as temporary:
        figure.savefig(temporary, format="png", metadata={"Software": None})
    with atomic_path(pdf) as temporary:
        figure.savefig(temporary, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    plt.close(figure)


def retina_violin(directory: Path) -> plt.Figure:
    """Dice per pair, as violins, per method and train -> test condition (the paper's retina figure)."""
    pairs = tables.read(directory, "retina_pairs")
    pairs = pairs[pairs.test_set == "test"].copy()
    pairs["condition"] = [f"{CONDITION_NAMES[a]} → {CONDITION_NAMES[b]}"
                          for a, b in zip(pairs.train_condition, pairs.test_condition)]
    order = [f"{CONDITION_NAMES[a]} → {CONDITION_NAMES[b]}" for a in CONDITION_NAMES for b in CONDITION_NAMES]
    order = [o for o in order if o in set(pairs.condition)]
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(order) + 2), 4))
    sns.violinplot(data=pairs, x="condition", y="dice", hue="method", order=order, cut=0,
                   density_norm="width", inner="quartile", ax=axis)
    axis.set(xlabel="train → test", ylabel="Dice", ylim=(0, 1))
    axis.tick_params(axis="x", rotation=20)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title="method")
    return figure


def shift_sweep(directory: Path) -> plt.Figure:
    """Dice against shift magnitude: each method's capture radius, with its 95 % band over pairs."""
    sweep = tables.read(directory, "shift_sweep")
    figure, axis = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=sweep, x="shift_px", y="dice", hue="method", marker="o", ax=axis)
    colours = {line.get_label(): line.get_color() for line in axis.get_lines()}
    for method, curve in sweep.groupby("method"):
        axis.fill_between(curve.shift_px, curve.dice_ci_low, curve.dice_ci_high, alpha=0.15, linewidth=0,
                          color=colours.get(method))
    before = sweep.groupby("shift_px")["dice_before"].mean()
    axis.plot(before.index, before.values, "k--", label="unregistered")
    axis.set(xlabel="vertical shift of the fixed image (pixels at network resolution)", ylabel="Dice", ylim=(0, 1))
    axis.legend(fontsize="small")
    return figure


def learning_curves(directory: Path) -> plt.Figure:
    """Validation Dice (retina) and mTRE (lung) against training step, per method and train condition."""
    curves = tables.read(directory, "learning_curves")
    panels = [(e, score) for e, score in (("retina", "val_dice"), ("lung", "val_mtre_mm"))
              if score in curves and curves[curves.experiment == e][score].notna().any()]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, (experiment, score) in zip(axes[0], panels):
        data = curves[curves.experiment == experiment].copy()
        data["train"] = data.train_condition.map(CONDITION_NAMES)
        sns.lineplot(data=data, x="step", y=score, hue="method", style="train", marker="o", markersize=3, ax=axis)
        axis.set(xlabel="training step", title=experiment,
                 ylabel="validation Dice" if score == "val_dice" else "validation mTRE (mm)")
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return figure


def landscape(directory: Path) -> plt.Figure:
    """Loss and dL/dt of a translation alone and of TwoStep{translation, network}."""
    curve = pd.read_csv(directory.parent / "landscape" / "landscape.csv")
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for name, label in (("translation", "translation T"), ("twostep", "TwoStep{T, Φ}")):
        top.plot(curve.t, curve[f"loss_{name}"], label=label)
        bottom.plot(curve.t, curve[f"grad_{name}"], label=label)
    top.set(ylabel="similarity loss")
    bottom.set(xlabel="translation t", ylabel="dL/dt")
    bottom.axhline(0, color="k", lw=0.5)
    top.legend()
    return figure


def toy1d(directory: Path) -> plt.Figure:
    """The 1-D toy: the images, attention's estimate of A^-1 o B against the analytic curve, the error."""
    from equireg.toy1d import plot_toy

    curve = pd.read_csv(directory.parent / "toy1d" / "toy1d.csv")
    interior = curve["interior"].astype(bool)
    error = (curve.estimate - curve.analytic).abs().to_numpy()
    return plot_toy({"x": curve.x.to_numpy(), "estimate": curve.estimate.to_numpy(),
                     "analytic": curve.analytic.to_numpy(), "error": error,
                     "max_error": float(error[interior].max()), "margin": float(curve.x[interior].iloc[0])})


def _qualitative(examples: Sequence[str], methods: Sequence[str], prefix: str) -> plt.Figure:
    figure, axes = plt.subplots(len(examples), 4, figsize=(8, 2.1 * len(examples)), squeeze=False)
    for row, (method, path) in enumerate(zip(methods, examples)):
        data = load_arrays(path)
        fixed, moving, warped = (data[f"{prefix}{key}"] for key in ("fixed", "moving", "warped"))
        for col, (title, image) in enumerate((("fixed", fixed), ("moving", moving), ("warped moving", warped),
                                              ("difference", warped - fixed))):
            axis = axes[row, col]
            axis.imshow(image, cmap="RdBu_r" if col == 3 else "gray",
                        vmin=-1 if col == 3 else 0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title)
        axes[row, 0].set_ylabel(method)
    return figure


def qualitative_retina(examples: Sequence[str]) -> plt.Figure:
    """Fixed / moving / warped / difference on a shifted test pair, one row per method."""
    # results/<preset>/retina/<method>/<train condition>/seed<k>_examples.npz
    return _qualitative(examples, [Path(p).parent.parent.name for p in examples], "test_shift/")


def qualitative_lung(examples: Sequence[str]) -> plt.Figure:
    """The same panel on the middle slice of a lung test pair."""
    # results/<preset>/lung/<method>/seed<k>_examples.npz
    return _qualitative(examples, [Path(p).parent.name for p in examples], "")


def vessel_masks(train: str) -> plt.Figure:
    """Four generated training vessel maps (the first moving images of the not-shifted training set:
    pair k uses image k modulo the number of images, so these are four different trees)."""
    from equireg.data.retina import plot_vessel_masks

    return plot_vessel_masks(list(load_arrays(train)["moving"][:4, 0]))


def draw(name: str, directory: str | Path, png: str | Path, pdf: str | Path, *, retina_examples: Sequence[str],
         lung_examples: Sequence[str], train: str) -> None:
    """Draw figure ``name`` from the tables in ``directory``."""
    style()
    directory = Path(directory)
    makers: dict[str, Callable[[], plt.Figure]] = {
        "retina_violin": lambda: retina_violin(directory),
        "shift_sweep": lambda: shift_sweep(directory),
        "learning_curves": lambda: learning_curves(directory),
        "landscape": lambda: landscape(directory),
        "toy1d": lambda: toy1d(directory),
        "qualitative_retina": lambda: qualitative_retina(retina_examples),
        "qualitative_lung": lambda: qualitative_lung(lung_examples),
        "vessel_masks": lambda: vessel_masks(train),
    }
    if name not in makers:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(makers)}")
    save(makers[name](), png, pdf)

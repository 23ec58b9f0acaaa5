"""One function per figure, each drawn from the result tables (or saved example arrays).

All figures share one style (:func:`style`) and are written as PNG and PDF with fixed metadata,
so reruns produce the same files.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from equireg import tables  # noqa: E402
from equireg.data.datasets import load_arrays  # noqa: E402
from equireg.files import atomic_path  # noqa: E402
from equireg.methods import DISPLAY_NAMES, display_name  # noqa: E402
from equireg.methods import trained as trained_methods  # noqa: E402

CONDITION_NAMES = {"none": "not shifted", "shift": "shifted", "shift_scale": "shifted+scaled"}
#: one colour per method in every figure: Okabe-Ito, safe for colour-blind readers; grey for the
#: unregistered reference
COLOURS = {"unregistered": "#999999", "carl": "#D55E00", "carl_draft": "#CC79A7", "gradicon": "#0072B2",
           "voxelmorph": "#009E73", "classical": "#000000", "transformer_only": "#E69F00", "unet_only": "#56B4E9"}
DPI = 300
#: every figure and its section of the report, in the paper's order (the report sorts sections by
#: name, hence the numbers)
SECTIONS = {"retina_violin": "1 Retina", "qualitative_retina": "1 Retina", "shift_sweep": "1 Retina",
            "vessel_masks": "1 Retina", "landscape": "2 Loss landscape", "toy1d": "3 1-D toy",
            "qualitative_lung": "4 Lung", "learning_curves": "5 Training"}


def palette(methods: Sequence[str]) -> dict[str, str]:
    """Colours keyed by display name, for seaborn's ``hue`` on display names."""
    extra = iter(sns.color_palette("colorblind", len(methods)).as_hex())
    return {display_name(m): COLOURS.get(m) or next(extra) for m in methods}


def method_order(methods: Sequence[str]) -> list[str]:
    """Display names in the order of ``DISPLAY_NAMES`` (unknown methods, e.g. plugins, last)."""
    known = [m for m in DISPLAY_NAMES if m in set(methods)]
    return [display_name(m) for m in known + sorted(set(methods) - set(known))]


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight", "image.cmap": "gray"})


def save(figure: plt.Figure, png: str | Path, pdf: str | Path) -> None:
    """Write PNG and PDF atomically, without timestamps in the metadata."""
    with atomic_path(png) as temporary:
        figure.savefig(temporary, format="png", metadata={"Software": None})
    with atomic_path(pdf) as temporary:
        figure.savefig(temporary, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    plt.close(figure)


def retina_violin(directory: Path) -> plt.Figure:
    """Dice per generated test pair, as violins, per method and train -> test condition (the paper's
    retina figure), with the unregistered pairs as reference. Methods that do not train (the
    classical baseline) are evaluated once and shown in every train condition."""
    pairs = tables.read(directory, "retina_pairs")
    pairs = pairs[pairs.test_set == "test"]
    trained_on = sorted(set(pairs.train_condition), key=list(CONDITION_NAMES).index)
    untrained = sorted(set(pairs.method) - set(trained_methods()))
    copies = [pairs[pairs.method == m].assign(train_condition=c) for m in untrained for c in trained_on if c != "none"]
    reference = pairs.drop_duplicates(["train_condition", "test_condition", "seed", "pair"]).assign(
        method="unregistered", dice=lambda frame: frame.dice_before)
    data = pd.concat([pairs, *copies, reference], ignore_index=True)
    data["method"] = data.method.map(display_name)
    data["condition"] = [f"{CONDITION_NAMES[a]} → {CONDITION_NAMES[b]}"
                         for a, b in zip(data.train_condition, data.test_condition)]
    order = [f"{CONDITION_NAMES[a]} → {CONDITION_NAMES[b]}" for a in CONDITION_NAMES for b in CONDITION_NAMES]
    order = [o for o in order if o in set(data.condition)]
    methods = sorted(set(pairs.method)) + ["unregistered"]
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(order) + 2), 4))
    sns.violinplot(data=data, x="condition", y="dice", hue="method", order=order, hue_order=method_order(methods),
                   palette=palette(methods), cut=0, density_norm="width", inner="quartile", linewidth=0.6, ax=axis)
    axis.set(xlabel="train → test condition", ylabel="Dice (generated test pairs)", ylim=(0, 1))
    axis.tick_params(axis="x", rotation=20)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title="method")
    return figure


def _legend_by_method(axis: plt.Axes, methods: Iterable[str]) -> None:
    """The legend beside the axes in the methods' display order, each "method (IO)" line after its
    method's and the unregistered line last."""
    handles, labels = axis.get_legend_handles_labels()
    rank = {name: k for k, name in enumerate(method_order([*methods, "unregistered"]))}
    ordered = sorted(zip(labels, handles),
                     key=lambda item: (rank.get(item[0].removesuffix(" (IO)"), len(rank)), item[0].endswith(" (IO)")))
    axis.legend([h for _, h in ordered], [lab for lab, _ in ordered], loc="upper left", bbox_to_anchor=(1.01, 1),
                fontsize="small", title="method (95 % band)")


def shift_sweep(directory: Path) -> plt.Figure:
    """Dice against shift magnitude: each method's capture radius, with its 95 % band over pairs;
    "method (IO)" (instance optimisation, on its own pairs) dashed in the method's colour, as the
    paper draws it."""
    sweep = tables.read(directory, "shift_sweep")
    optimized = tables.read_if_written(directory, "shift_sweep_io")
    figure, axis = plt.subplots(figsize=(6.5, 4))
    colours = palette(sorted(set(sweep.method)))
    for method, curve in sweep.groupby("method"):
        name = display_name(method)
        axis.plot(curve.shift_px, curve.dice, marker="o", markersize=3, color=colours[name], label=name)
        axis.fill_between(curve.shift_px, curve.dice_ci_low, curve.dice_ci_high, alpha=0.15, linewidth=0,
                          color=colours[name])
    if optimized is not None:
        for method, curve in optimized.groupby("method"):
            name = display_name(method)
            axis.plot(curve.shift_px, curve.dice, "--", marker="s", markersize=3, color=colours.get(name, "black"),
                      label=f"{name} (IO)")
    before = sweep.groupby("shift_px")["dice_before"].mean()
    axis.plot(before.index, before.values, ":", color=COLOURS["unregistered"], label="unregistered")
    axis.set(xlabel="vertical shift of the fixed image (pixels at network resolution)", ylabel="Dice", ylim=(0, 1))
    _legend_by_method(axis, sweep.method.unique())
    return figure


def _learning_curve_panel(axis: plt.Axes, data: pd.DataFrame, experiment: str, score: str) -> None:
    """One experiment's validation ``score`` against training step, per method (and train condition,
    where there are several)."""
    data = data[data[score].notna()].copy()
    methods = sorted(set(data.method))
    data["method"] = data.method.map(display_name)
    data["train"] = data.train_condition.map(CONDITION_NAMES)
    several = data.train.nunique() > 1  # 3-D runs have one condition: no line-style legend
    sns.lineplot(data=data, x="step", y=score, hue="method", hue_order=method_order(methods),
                 palette=palette(methods), style="train" if several else None, marker="o", markersize=3,
                 ax=axis)
    axis.set(xlabel="training step", title=experiment,
             ylabel="validation Dice" if score == "val_dice" else "validation mTRE (mm, log scale)")
    if score == "val_mtre_mm":  # an untrained 3-D CARL starts tens of mm off; the end is what matters
        axis.set_yscale("log")
        axis.set_yticks([t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200) if
                         data[score].min() / 2 <= t <= data[score].max() * 2])
        axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def learning_curves(directory: Path) -> plt.Figure:
    """Validation Dice (retina) and mTRE (lung) against training step, per method and train condition."""
    curves = tables.read(directory, "learning_curves")
    panels = [(e, score) for e, score in (("retina", "val_dice"), ("lung", "val_mtre_mm"))
              if score in curves and curves[curves.experiment == e][score].notna().any()]
    figure, axes = plt.subplots(len(panels), 1, figsize=(7, 3.4 * len(panels)), squeeze=False, layout="constrained")
    for axis, (experiment, score) in zip(axes[:, 0], panels):
        _learning_curve_panel(axis, curves[curves.experiment == experiment], experiment, score)
    return figure


def landscape(curve_csv: str | Path) -> plt.Figure:
    """SSD and dL/dt of a translation alone and of TwoStep{translation, network}, with the
    half-depth basins whose widths claim 3 compares."""
    from equireg.landscape import basin

    curve = pd.read_csv(curve_csv)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5), sharex=True)
    for (name, label), colour in zip((("translation", "translation T"), ("twostep", "TwoStep{T, Φ}")),
                                     ("#0072B2", "#D55E00")):
        loss = curve[f"loss_{name}"]
        top.plot(curve.t, loss, label=label, color=colour)
        bottom.plot(curve.t, curve[f"grad_{name}"], label=label, color=colour)
        left, right, level = basin(curve.t.to_numpy(), loss.to_numpy())
        top.hlines(level, left, right, color=colour, linestyle=":", lw=2,
                   label=f"{label}: half-depth basin {right - left:.3f}")
    top.set(ylabel="SSD")
    bottom.set(xlabel="translation t ([0, 1] units)", ylabel="dSSD/dt")
    bottom.axhline(0, color="k", lw=0.5)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return figure


def toy1d(curve_csv: str | Path) -> plt.Figure:
    """The 1-D toy: the images, attention's estimate of A^-1 o B against the analytic curve, the error."""
    from equireg.toy1d import plot_toy, toy_error

    curve = pd.read_csv(curve_csv)
    interior = curve["interior"].astype(bool)
    error, max_error = toy_error(curve.estimate, curve.analytic, interior)
    return plot_toy({"x": curve.x.to_numpy(), "estimate": curve.estimate.to_numpy(),
                     "analytic": curve.analytic.to_numpy(), "error": error,
                     "max_error": max_error, "margin": float(curve.x[interior].iloc[0])})


#: characters per line of a row label in the qualitative figures: a vertical label longer than its
#: row (about 20 characters) runs into the next row
ROW_LABEL_WIDTH = 16


def row_label(method: str) -> str:
    """``method``'s display name on lines of at most ``ROW_LABEL_WIDTH`` characters, broken after a
    colon and before a parenthesis first ("ablation:" / "transformer only")."""
    parts = display_name(method).replace(": ", ":\n").replace(" (", "\n(").split("\n")
    return "\n".join(line for part in parts for line in textwrap.wrap(part, ROW_LABEL_WIDTH, break_long_words=False))


def _qualitative(examples: Sequence[str], prefix: str) -> plt.Figure:
    """One row per examples file (written by the evaluation, which names its ``method``)."""
    figure, axes = plt.subplots(len(examples), 4, figsize=(8.8, 2.1 * len(examples)), squeeze=False)
    for row, path in enumerate(examples):
        data = load_arrays(path)
        method = str(data["method"].item())
        fixed, moving, warped = (data[f"{prefix}{key}"] for key in ("fixed", "moving", "warped"))
        for col, (title, image) in enumerate((("fixed", fixed), ("moving", moving), ("warped moving", warped),
                                              ("warped − fixed", warped - fixed))):
            axis = axes[row, col]
            shown = axis.imshow(image, cmap="RdBu_r" if col == 3 else "gray", vmin=-1 if col == 3 else 0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title)
        figure.colorbar(shown, ax=axes[row, 3], fraction=0.046, pad=0.04)
        axes[row, 0].set_ylabel(row_label(method))
    return figure


def qualitative_retina(examples: Sequence[str]) -> plt.Figure:
    """Fixed / moving / warped / difference on a shifted test pair, one row per method."""
    return _qualitative(examples, "test_shift/")


def qualitative_lung(examples: Sequence[str]) -> plt.Figure:
    """The same panel on the middle coronal slice of a lung test pair (head at the top)."""
    return _qualitative(examples, "")


def vessel_masks(train: str) -> plt.Figure:
    """Four generated training vessel maps (the first moving images of the not-shifted training set:
    pair k uses image k modulo the number of images, so these are four different trees)."""
    from equireg.data.retina import plot_vessel_masks

    return plot_vessel_masks(list(load_arrays(train)["moving"][:4, 0]))


def draw(name: str, directory: str | Path, png: str | Path, pdf: str | Path, *, retina_examples: Sequence[str],
         lung_examples: Sequence[str], train: str, landscape_curve: str | Path, toy_curve: str | Path) -> None:
    """Draw figure ``name`` from the tables in ``directory`` (and the curves and examples named)."""
    style()
    directory = Path(directory)
    makers: dict[str, Callable[[], plt.Figure]] = {
        "retina_violin": lambda: retina_violin(directory),
        "shift_sweep": lambda: shift_sweep(directory),
        "learning_curves": lambda: learning_curves(directory),
        "landscape": lambda: landscape(landscape_curve),
        "toy1d": lambda: toy1d(toy_curve),
        "qualitative_retina": lambda: qualitative_retina(retina_examples),
        "qualitative_lung": lambda: qualitative_lung(lung_examples),
        "vessel_masks": lambda: vessel_masks(train),
    }
    if name not in makers:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(makers)}")
    save(makers[name](), png, pdf)


#: the brain experiment's figures and their sections of the report (its own rule draws them: a preset may
#: leave the experiment out)
BRAIN_SECTIONS = {"brain_shift": "4 Brain", "brain_learning_curves": "5 Training"}
#: Colin27's anatomical direction of each ITK axis
BRAIN_AXIS_NAMES = {"x": "left-right", "y": "front-back", "z": "foot-head"}


def brain_shift(directory: Path) -> plt.Figure:
    """The paper's brain figure: mean AAL Dice against the shift of the moving image, one line per
    method with its 95 % band over pairs, "method (IO)" dashed in the method's colour, the
    unregistered pairs dotted and the ceiling of the exact map dash-dotted."""
    table = tables.read(directory, "brain")
    figure, axis = plt.subplots(figsize=(6.5, 4))
    colours = palette(sorted(set(table.method)))
    for (method, steps), curve in table.groupby(["method", "io_steps"], sort=True):
        name, optimized = display_name(method), steps > 0
        axis.plot(curve.shift_mm, curve.dice, "--" if optimized else "-", marker="s" if optimized else "o",
                  markersize=3, color=colours[name], label=f"{name} (IO)" if optimized else name)
        if not optimized:
            axis.fill_between(curve.shift_mm, curve.dice_ci_low, curve.dice_ci_high, alpha=0.15, linewidth=0,
                              color=colours[name])
    plain = table[table.io_steps == 0].groupby("shift_mm")
    for column, line, colour, label in (("dice_before", ":", COLOURS["unregistered"], "unregistered"),
                                        ("dice_ceiling", "-.", "#555555", "exact map (ceiling)")):
        values = plain[column].mean()
        axis.plot(values.index, values.values, line, color=colour, label=label)
    axes_named = ", ".join(f"{a} ({BRAIN_AXIS_NAMES[a]})" for a in sorted(set(table.axis)))
    axis.set(xlabel=f"shift of the moving image (mm, along {axes_named})", ylabel="mean Dice over AAL labels",
             ylim=(0, 1))
    _legend_by_method(axis, table.method.unique())
    return figure


def brain_learning_curves(directory: Path) -> plt.Figure:
    """Validation Dice of every brain training run against its step, with the validation pairs'
    unregistered Dice (dotted) where the curves record it."""
    curves = tables.read(directory, "brain_curves")
    figure, axis = plt.subplots(figsize=(7, 3.4), layout="constrained")
    _learning_curve_panel(axis, curves, "brain (Colin27 + AAL)", "val_dice")
    if "val_dice_unregistered" in curves:  # the same validation pairs for every run
        axis.axhline(curves.val_dice_unregistered.mean(), linestyle=":", color=COLOURS["unregistered"],
                     label="unregistered")
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return figure


def draw_brain(name: str, directory: str | Path, png: str | Path, pdf: str | Path) -> None:
    """Draw brain figure ``name`` (:data:`BRAIN_SECTIONS`) from the tables in ``directory``."""
    if name not in BRAIN_SECTIONS:
        raise ValueError(f"unknown brain figure {name!r}; known: {', '.join(BRAIN_SECTIONS)}")
    style()
    makers = {"brain_shift": brain_shift, "brain_learning_curves": brain_learning_curves}
    save(makers[name](Path(directory)), png, pdf)

"""The analyses beyond the test tables: capture radius (shift sweep), equivariance error, loss
landscape and the 1-D toy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from equireg import devices
from equireg.carl import XI_POOLING
from equireg.experiments.evaluation import dice_rows, instance_optimization, io_columns, load_network, register_pairs
from equireg.experiments.jobs import PathLike, load_pairs
from equireg.files import write_csv, write_json

#: pooling factor of Xi in CARL's trees: equivariance is measured on sizes 1 + a multiple of it
EQUIVARIANCE_STRIDE = XI_POOLING


def shift_sweep(method: str, model: PathLike | None, pairs: PathLike, table: PathLike,
                settings: dict[str, Any], io: dict[str, Any] | None = None) -> None:
    """Dice against the vertical shift of the fixed image, on the sweep's pairs
    (:func:`~equireg.experiments.pairs.build_sweep_set`), one warped mask at a time. With ``io``
    (``steps``, ``lr``, ``pairs``), the variant "method (IO)" on the first ``pairs`` warped masks."""
    net = load_network(method, model, 2, settings)
    optimization = instance_optimization(net, settings, io)
    data = load_pairs(pairs)
    rows = []
    for k in np.unique(data["pair"])[:io["pairs"] if io else None]:
        chosen = data["pair"] == k
        one = {name: value[chosen] for name, value in data.items()}
        maps = register_pairs(net, one["moving"], one["fixed"], optimization=optimization)
        for shift, row in zip(one["shift_px"], dice_rows(one, maps)):
            rows.append({"method": method, **io_columns(io), "shift_px": float(shift), "pair": int(k),
                         "dice_before": row["dice_before"], "dice": row["dice"]})
    write_csv(table, pd.DataFrame(rows))


def equivariance(method: str, model: PathLike | None, test: PathLike, path: PathLike, settings: dict[str, Any],
                 pairs: int, shift: int) -> None:
    """[U,U] and [W,U] error (voxels) on the first ``pairs`` not-shifted test pairs: the fixed image
    moves ``shift`` pixels along the columns; in [W,U] the moving image moves ``shift`` along the rows.
    Reports the median over pairs of each pair's median and 95th percentile."""
    from equireg.equivariance import equivariance_report

    net = load_network(method, model, 2, settings)
    data = load_pairs(test)
    # On ICON's [0,1] grid a Downsample tree is exactly shift-equivariant only for sizes N with
    # N - 1 divisible by its pooling factor (4 for Xi); crop to such a size (the margin added by the
    # measurement keeps it when the shift is even).
    crop = tuple(slice(0, n - (n - 1) % EQUIVARIANCE_STRIDE) for n in data["moving"].shape[2:])
    device = devices.of(net)
    reports = [equivariance_report(net, torch.from_numpy(data["moving"][(slice(i, i + 1), slice(None), *crop)]).to(device),
                                   torch.from_numpy(data["fixed"][(slice(i, i + 1), slice(None), *crop)]).to(device),
                                   (shift, 0), (0, shift))
               for i in range(min(pairs, len(data["moving"])))]
    summary = {case: {statistic: float(np.median([r[case][statistic] for r in reports]))
                      for statistic in ("median_error_vox", "p95_error_vox")} for case in ("UU", "WU")}
    write_json(path, {"method": method, "shift_moving": [shift, 0], "shift_fixed": [0, shift],
                      "pairs": len(reports), **summary})


def landscape(train: PathLike, model: PathLike, table: PathLike, *, method: str, settings: dict[str, Any],
              stride: int) -> None:
    """The loss landscape of a translation with and without a trained network ``Phi`` (``method``'s
    model trained on not-shifted pairs), SSD, on the first four training pairs, at every
    ``stride``-th mid-pixel translation along the rows."""
    from equireg.landscape import loss_curve, mid_pixel_offsets
    from equireg.losses import SSD

    net = load_network(method, model, 2, settings)
    pairs = load_pairs(train)
    device = devices.of(net)
    moving = torch.from_numpy(pairs["moving"][:4]).to(device)
    fixed = torch.from_numpy(pairs["fixed"][:4]).to(device)
    curve = loss_curve(net, moving, fixed, mid_pixel_offsets(moving.shape[2], stride), SSD())
    write_csv(table, curve)


def toy1d(table: PathLike) -> None:
    """The 1-D toy curve: x, the attention estimate, the analytic A^-1 o B, interior flag."""
    from equireg.toy1d import solve_toy

    result = solve_toy()
    write_csv(table, pd.DataFrame({"x": result["x"], "estimate": result["estimate"], "analytic": result["analytic"],
                                    "interior": result["interior"].astype(int)}))

"""The brain experiment's scores, tables, claims and figure, from small arrays and result files made here."""

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT

from equireg import claims, figures, tables
from equireg.experiments.brain_evaluation import brain_rows, shifted
from equireg.metrics import dice, label_dice
from equireg.transforms import identity_map


def test_label_dice_matches_dice_per_mask():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, (8, 9, 10)), rng.integers(0, 6, (8, 9, 10))
    labels = np.array([1, 3, 5])
    expected = [dice(a == k, b == k) for k in labels]
    assert np.allclose(label_dice(a, b, labels), expected)


def _pairs() -> dict[str, np.ndarray]:
    """Two pairs of blocky label maps on an 18x18x26 canvas, the moving labels offset by one voxel,
    and their exact maps (the offset)."""
    labels = np.zeros((18, 18, 26), np.int16)
    labels[3:9, 3:15, 3:12], labels[9:15, 3:15, 3:12] = 1, 2
    moving = np.roll(labels, 1, axis=0)
    exact = identity_map(labels.shape)[0].numpy().copy()
    exact[0] += 1 / 17
    stack = lambda a: np.stack([a, a])[:, None]  # noqa: E731
    return {"moving": stack(moving.astype(np.float32)), "fixed": stack(labels.astype(np.float32)),
            "moving_label": stack(moving), "fixed_label": stack(labels), "coordinates": np.stack([exact, exact]),
            "spacing": np.full(3, 2.0), "label_names": np.array(["A", "B"])}


def test_rows_score_the_exact_map_and_its_shift():
    pairs = _pairs()
    rows, scored, per_label = brain_rows(pairs, torch.from_numpy(pairs["coordinates"]))
    assert rows[0]["dice"] == pytest.approx(1.0) and rows[0]["dice_ceiling"] == pytest.approx(1.0)
    assert rows[0]["dice_before"] < 0.9 and rows[0]["epe_mm"] == pytest.approx(0.0, abs=1e-4)
    assert list(scored[0]) == [1, 2] and len(per_label[0]) == 2 and rows[0]["labels"] == 2
    moved = shifted(pairs, 8, "x")  # x is array axis 2
    assert np.array_equal(moved["moving_label"][..., 8:], pairs["moving_label"][..., :-8])
    rows, _, _ = brain_rows(moved, torch.from_numpy(moved["coordinates"]))
    assert rows[0]["dice"] == pytest.approx(1.0) and rows[0]["dice_before"] < 0.5
    # registering as if nothing had moved: the labels miss by the shift
    rows, _, _ = brain_rows(moved, torch.from_numpy(pairs["coordinates"]))
    assert rows[0]["dice"] < 0.5


def _run_files(tmp_path, method, dice_at, io=False):
    """A run's per-pair and per-label files: Dice ``dice_at(shift_mm)`` on three pairs."""
    rows, labels = [], []
    io_columns = {"io_steps": 50, "io_lr": 2e-5} if io else {}
    for shift_vox in (0, 4, 12):
        for pair in range(3):
            run = {"method": method, **io_columns, "seed": 0, "axis": "x", "shift_vox": shift_vox,
                   "shift_mm": 5.25 * shift_vox}
            value = dice_at(5.25 * shift_vox) + 0.01 * pair
            rows.append({**run, "pair": pair, "dice_before": 0.6 if shift_vox == 0 else 0.05, "dice": value,
                         "dice_ceiling": 0.74, "hd95_mm": 6.0, "folds_percent": 0.0, "sdlogj": 0.05,
                         "epe_mm": 3.0, "labels": 116})
            labels.append({**run, "pair": pair, "label": 1, "name": "Precentral_L", "dice": value})
    table, label_table = tmp_path / f"{method}{io}.csv", tmp_path / f"{method}{io}_labels.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    pd.DataFrame(labels).to_csv(label_table, index=False)
    return str(table), str(label_table)


@pytest.fixture
def written(tmp_path):
    carl = _run_files(tmp_path, "carl", lambda mm: 0.70)
    gradicon = _run_files(tmp_path, "gradicon", lambda mm: 0.70 - 0.01 * mm)
    gradicon_io = _run_files(tmp_path, "gradicon", lambda mm: 0.72 - 0.009 * mm, io=True)
    curve = tmp_path / "curve.csv"
    steps = np.arange(1, 41)  # risen by step 10, then flat up to a wobble of 0.002
    pd.DataFrame({"experiment": "brain", "method": "carl", "train_condition": "none", "seed": 0, "step": steps,
                  "val_dice": np.minimum(0.5 + 0.02 * steps, 0.7) + 0.002 * (-1.0) ** steps,
                  "val_dice_unregistered": 0.6}).to_csv(curve, index=False)
    inputs = SimpleNamespace(brain=[carl[0], gradicon[0]], brain_labels=[carl[1], gradicon[1]],
                             brain_io=[gradicon_io[0]], brain_io_labels=[gradicon_io[1]], curves=[str(curve)])
    directory = tmp_path / "tables"
    tables.write_brain(inputs, directory)
    return directory


def test_tables_describe_themselves(written):
    pairs = tables.read(written, "brain_pairs")
    assert list(pairs.columns[:8]) == tables.BRAIN_KEYS and len(pairs) == 3 * 3 * 3
    assert set(pairs[pairs.method == "carl"].io_steps) == {0}  # runs without IO: 0 steps
    summary = tables.read(written, "brain")
    carl = summary[(summary.method == "carl") & (summary.shift_vox == 12)].iloc[0]
    assert carl.dice == pytest.approx(0.71) and carl.pairs == 3 and carl.shift_mm == 63
    assert carl.dice_ci_low <= carl.dice <= carl.dice_ci_high
    assert len(tables.read(written, "brain_labels")) == 27
    assert tables.read(written, "brain_plateau").plateau.iloc[0] in ("yes", "not yet", "undecided")


def test_leaderboard_has_a_row_per_method_and_a_dice_column_per_shift(written):
    board = tables.read(written, "leaderboard_brain")
    assert list(board.method) == ["unregistered", "carl", "gradicon", "gradicon", "exact map (ceiling)"]
    assert [c for c in board.columns if c.startswith("dice_")] == ["dice_0mm", "dice_21mm", "dice_63mm"]
    carl, gradicon, optimized = (board.iloc[i] for i in (1, 2, 3))
    assert carl.dice_63mm.startswith("0.710 [") and gradicon.dice_63mm.startswith("0.080 [")
    assert optimized.io_steps == 50 and np.isnan(carl.io_steps)  # IO rows last among the methods
    assert board.iloc[0].dice_0mm == "0.600" and board.iloc[-1].dice_63mm == "0.740"
    shown = (written / "leaderboard_brain.md").read_text()
    assert "| GradICON (IO) |" in shown and "| CARL |" in shown

def test_brain_claims_pass_on_the_papers_pattern_and_fail_on_its_opposite(written):
    checked = claims.brain_claims(written)
    assert [c.passed for c in checked] == [True, True, True, True], [c.measured for c in checked]
    assert "1 at plateau" in checked[3].measured
    # swap the methods: CARL falls, GradICON stays flat
    pairs = tables.read(written, "brain_pairs")
    swapped = pairs.assign(method=pairs.method.map({"carl": "gradicon", "gradicon": "carl"}))
    assert not claims.claim_brain_carl(swapped).passed
    assert not claims.claim_brain_gradicon(swapped).passed
    missing = claims.claim_brain_io_gradicon(pairs[pairs.io_steps == 0])
    assert not missing.passed and "not measured" in missing.measured
    # a run still rising by 0.02 Dice per step to its end is "not yet": the plateau claim fails
    curves = tables.read(written, "brain_curves")
    rising = tables.plateau(curves.assign(val_dice=0.3 + 0.02 * curves.step))
    assert list(rising.plateau) == ["not yet"] and not claims.claim_brain_plateau(rising).passed


def test_brain_claims_alone_for_a_preset_that_runs_the_brain_on_demand(written, tmp_path):
    claims.write_brain(written, tmp_path / "brain_claims.md", csv_path=tmp_path / "brain_claims.csv")
    text = (tmp_path / "brain_claims.md").read_text()
    assert text.startswith("# Brain claims") and text.count("| PASS |") == 4
    assert list(pd.read_csv(tmp_path / "brain_claims.csv").claim) == [1, 2, 3, 4]


def test_check_all_appends_the_brain_claims_only_when_asked(written):
    # beside the committed reference tables (default preset, which runs no brain)
    for table in (ROOT / "results" / "reference" / "tables").glob("*.csv"):
        if not (written / table.name).exists():  # the reference may hold a brain run of its own
            shutil.copy(table, written)
    plain, with_brain = claims.check_all(written), claims.check_all(written, None, True)
    assert len(with_brain) == len(plain) + 4
    assert [(c.text, c.measured) for c in with_brain[:len(plain)]] == [(c.text, c.measured) for c in plain]
    assert with_brain[-4].text.startswith("Brain") and all(c.passed for c in with_brain[-4:])


@pytest.mark.parametrize("name", list(figures.BRAIN_SECTIONS))
def test_figure(written, tmp_path, name):
    figures.draw_brain(name, written, tmp_path / "b.png", tmp_path / "b.pdf")
    assert (tmp_path / "b.png").stat().st_size > 1000 and (tmp_path / "b.pdf").exists()

"""Intervals, paired tests, endpoint errors, self-describing result files and the reproduction check."""

import numpy as np
import pandas as pd
import pytest
import torch

from equireg import metrics, reproduction, tables
from equireg.transforms import identity_map
from equireg.uncertainty import bootstrap_ci, wilcoxon_p


def test_bootstrap_interval_covers_the_mean_shrinks_with_n_and_repeats():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 0.1, 10), rng.normal(0.5, 0.1, 1000)
    low, high = bootstrap_ci(small)
    assert low < small.mean() < high
    large_low, large_high = bootstrap_ci(large)
    assert large_high - large_low < (high - low) / 5  # width ~ 1/sqrt(n): 100x the pairs, ~10x narrower
    assert abs((large_high - large_low) / 2 - 1.96 * 0.1 / np.sqrt(1000)) < 0.002  # normal theory
    assert bootstrap_ci(small) == (low, high)  # seeded: byte-reproducible tables
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])


def test_wilcoxon_separates_a_consistent_difference_from_noise():
    rng = np.random.default_rng(2)
    a = rng.normal(0.6, 0.05, 24)
    assert wilcoxon_p(a, a - 0.05) < 1e-4
    assert wilcoxon_p(a, a + rng.normal(0, 0.05, 24)) > 0.01
    assert wilcoxon_p(a, a) == 1.0
    with pytest.raises(ValueError, match="paired"):
        wilcoxon_p(a, a[:3])


def test_endpoint_error_is_the_distance_in_moving_voxels():
    shape = (11, 21)
    exact = identity_map(shape)[0].numpy()
    moved = exact.copy()
    moved[0] += 3 / 10  # 3 voxels along rows (11 voxels: spacing 1/10)
    moved[1] += 4 / 20  # 4 voxels along columns
    assert metrics.endpoint_error_voxels(moved, exact) == pytest.approx(5.0)
    mask = np.zeros(shape, bool)
    mask[2, 3] = True
    moved[:, 2, 3] = exact[:, 2, 3]
    assert metrics.endpoint_error_voxels(moved, exact, mask) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no voxel"):
        metrics.endpoint_error_voxels(moved, exact, np.zeros(shape, bool))


def test_exact_map_reaches_the_ceiling_with_zero_endpoint_error():
    from equireg.data.perturb import retina_dataset
    from equireg.data.retina import generate_vessel_mask
    from equireg.experiments import dice_rows

    pairs = retina_dataset([generate_vessel_mask(7)], "shift", 1, seed=0, pool=16, with_map=True).arrays()
    exact = torch.from_numpy(pairs["coordinates"])
    (row, _) = dice_rows(pairs, exact)
    assert row["epe_px"] == pytest.approx(0.0, abs=1e-4) and row["epe_vessels_px"] == pytest.approx(0.0, abs=1e-4)
    assert row["dice"] == row["dice_ceiling"] > row["dice_before"]
    identity = identity_map(exact.shape[2:]).expand_as(exact)
    (unregistered, _) = dice_rows(pairs, identity)
    assert unregistered["epe_vessels_px"] > 5  # the 25-pixel shift at 1/16 scale plus the warp
    assert unregistered["dice"] == unregistered["dice_before"]


def test_result_files_must_say_which_run_they_are(tmp_path):
    path = tmp_path / "seed0.csv"
    pd.DataFrame([{"test_set": "test", "test_condition": "none", "pair": 0, "dice": 0.5, "dice_before": 0.2,
                   "folds_percent": 0.0}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"seed0.csv: result file lacks the columns \['method', 'train_condition', 'seed'\]"):
        tables.retina_pairs([str(path)])


def _run_tables(directory, carl_dice, seeds=(0,)):
    rows = [{"method": "carl", "train_condition": "none", "seed": s, "test_set": "test", "test_condition": c,
             "pair": i, "dice_before": 0.2, "dice": carl_dice + 0.01 * i + 0.002 * s, "folds_percent": 0.0}
            for s in seeds for c in ("none", "shift") for i in range(6)]
    pairs = pd.DataFrame(rows)
    tables.write_table(pairs, directory, "retina_pairs")
    tables.write_table(tables.retina(pairs), directory, "retina")
    tables.write_table(pd.DataFrame([{"method": "carl", "case": "[W,U]", "median_error_vox": 0.3,
                                      "p95_error_vox": 0.5}]), directory, "equivariance")


def test_reproduction_judges_each_headline_by_its_measured_spread(tmp_path):
    reference, same, far = tmp_path / "reference", tmp_path / "same", tmp_path / "far"
    _run_tables(reference, 0.50)
    _run_tables(same, 0.50)
    _run_tables(far, 0.60)
    comparison = reproduction.compare(reference, same)
    dice = comparison[comparison.quantity.str.startswith("retina")]
    assert (dice.result == "within").all() and (dice.difference == 0).all()
    assert (dice.tolerance_from == "reference 95 % CI half-width").all()
    assert comparison.set_index("quantity").loc["[W,U] median error (voxels), carl", "result"] == "not judged"
    assert (reproduction.compare(reference, far)
            .query("quantity.str.startswith('retina')", engine="python").result == "OUTSIDE").all()
    several = tmp_path / "seeds"
    _run_tables(several, 0.50, seeds=(0, 1, 2))
    assert (reproduction.compare(reference, several).tolerance_from.iloc[0]) == "2 x seed std"
    reproduction.write(reference, far, tmp_path / "reproduction.md")
    text = (tmp_path / "reproduction.md").read_text()
    assert "0 of 2 judged headline numbers lie within their tolerance; 2 outside." in text


def test_reproduction_tolerance_covers_the_measured_cross_cpu_spread(tmp_path):
    """Two runs on two CPU kinds differ by 0.1 Dice on CARL's shifted pairs (far more than the
    reference's interval over pairs): a third run that far off lies within twice that difference."""
    reference, other_cpu, far = tmp_path / "reference", tmp_path / "other_cpu", tmp_path / "far"
    _run_tables(reference, 0.50)
    _run_tables(other_cpu, 0.60)
    _run_tables(far, 0.69)
    spread = reproduction.cross_cpu_spread(reference, other_cpu, "two CPU kinds")
    assert spread.set_index("quantity").loc["retina Dice, carl, test shift", "difference"] == pytest.approx(0.1)
    judged = reproduction.compare(reference, far, spread).set_index("quantity")
    assert judged.loc["retina Dice, carl, test shift", "tolerance_from"] == "2 x cross-CPU difference"
    assert judged.loc["retina Dice, carl, test shift", "tolerance"] == pytest.approx(0.2)
    assert judged.loc["retina Dice, carl, test shift", "result"] == "within"
    assert (reproduction.compare(reference, far).loc[lambda frame: frame.quantity.str.startswith("retina"), "result"]
            == "OUTSIDE").all()  # without the measured spread, the interval over pairs alone
    # the equivariance error both CPUs gave exactly measured no spread: shown, not judged
    assert judged.loc["[W,U] median error (voxels), carl", "result"] == "not judged"
    path = tmp_path / "spread.csv"
    spread.to_csv(path, index=False)
    reproduction.write(reference, far, tmp_path / "reproduction.md", path)
    text = (tmp_path / "reproduction.md").read_text()
    assert "Cross-CPU difference measured between two CPU kinds." in text and "2 of 2 judged" in text

"""Landscape basin width, tables and claims on synthetic inputs."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from equireg import claims, reproduction, summary, tables
from equireg.landscape import basin_width, loss_curve, mid_pixel_offsets
from equireg.losses import SSD
from equireg.wrappers import DisplacementField


def test_basin_width_is_the_half_depth_interval():
    t = np.linspace(-0.5, 0.5, 101)
    narrow = 1 - np.exp(-(t / 0.02) ** 2)
    wide = 1 - np.exp(-(t / 0.2) ** 2)
    assert basin_width(t, narrow) < 0.06
    assert basin_width(t, wide) > 0.25


class _Zero(torch.nn.Module):
    def forward(self, moving, fixed):
        return torch.zeros(moving.shape[0], 2, *moving.shape[2:])


def test_loss_curve_gradient_matches_finite_differences():
    torch.manual_seed(0)
    fixed = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 32, 24), 5, 1, 2)
    moving = torch.roll(fixed, 3, dims=2)
    curve = loss_curve(DisplacementField(_Zero()), moving, fixed, np.array([-0.1, -0.1 + 1e-3, 0.05]), SSD())
    finite = (curve.loss_translation[1] - curve.loss_translation[0]) / 1e-3
    assert abs(curve.grad_translation[0] - finite) < 0.05 * abs(finite) + 1e-4
    # a network that returns the identity leaves TwoStep equal to the translation alone
    np.testing.assert_allclose(curve.loss_twostep, curve.loss_translation, atol=1e-6)


def test_mid_pixel_offsets_sample_the_slope_between_pixels():
    size = 32
    offsets = mid_pixel_offsets(size)
    phase = offsets * (size - 1) - 0.5
    np.testing.assert_allclose(phase, np.round(phase), atol=1e-9)
    assert offsets.min() >= -0.5 and offsets.max() <= 0.5 and len(offsets) == size
    assert len(mid_pixel_offsets(size, stride=4)) == size // 4

    # bilinear SSD is quadratic in t within a pixel, so its derivative at mid-pixel is the secant
    # between the two neighbouring whole-pixel translations (an off-phase grid would not be)
    torch.manual_seed(0)
    fixed = torch.rand(1, 1, size, 20)
    moving = torch.roll(fixed, 2, dims=2)
    spacing = 1 / (size - 1)
    chosen = offsets[[10, 17]]
    nodes = np.concatenate([chosen - spacing / 2, chosen + spacing / 2])
    curve = loss_curve(DisplacementField(_Zero()), moving, fixed, np.concatenate([chosen, nodes]), SSD())
    loss = curve.loss_translation.to_numpy()
    secant = (loss[4:6] - loss[2:4]) / spacing
    np.testing.assert_allclose(curve.grad_translation[:2], secant, rtol=1e-3, atol=1e-6)


def _tables(directory, carl_shift_dice=0.50, twostep_width=0.3):
    """Claim tables built the workflow's way: per-pair rows (4 pairs around each mean) -> retina."""
    spread = np.array([-0.02, -0.01, 0.01, 0.02])
    pairs = pd.DataFrame([
        {"method": m, "train_condition": "none", "seed": 0, "test_set": "test", "test_condition": c, "pair": i,
         "dice_before": b, "dice": d + spread[i], "hd95_px": 3.0 - d, "folds_percent": 0.0, "sdlogj": 0.1}
        for m, c, d, b in [("gradicon", "none", 0.70, 0.3), ("gradicon", "shift", 0.20, 0.1),
                           ("carl", "none", 0.52, 0.3), ("carl", "shift", carl_shift_dice, 0.1)]
        for i in range(4)])
    tables.write_table(pairs, directory, "retina_pairs")
    tables.write_table(tables.retina(pairs), directory, "retina")
    # "method (IO)": a little better than without on the same pairs
    io_pairs = pairs[pairs.test_condition.isin(["none", "shift"])].assign(
        dice=lambda frame: frame.dice + 0.01, io_steps=50, io_lr=2e-5)
    tables.write_table(io_pairs, directory, "retina_io")
    lung_pairs = pd.DataFrame([{"method": "gradicon", "seed": 0, "pair": i, "mtre_mm": 2.0 + 0.1 * i,
                                "mtre_before_mm": 5.0, "folds_percent": 0.0} for i in range(3)])
    tables.write_table(lung_pairs, directory, "lung_pairs")
    tables.write_table(lung_pairs.assign(mtre_mm=lambda frame: frame.mtre_mm - 0.2, io_steps=50, io_lr=2e-5),
                       directory, "lung_io")
    tables.write_table(pd.DataFrame([{"transform": "translation", "basin_width": 0.08},
                                     {"transform": "twostep", "basin_width": twostep_width}]), directory, "landscape")
    tables.write_table(pd.DataFrame([{"max_error": 0.001, "points": 10}]), directory, "toy1d")
    tables.write_table(pd.DataFrame([
        {"method": m, "case": c, "median_error_vox": v, "p95_error_vox": v}
        for m, c, v in [("carl", "[U,U]", 0.2), ("carl", "[W,U]", 0.3), ("gradicon", "[U,U]", 0.5),
                        ("gradicon", "[W,U]", 16.0)]]), directory, "equivariance")
    tables.write_table(pd.DataFrame([{"method": "gradicon", "mtre_mm": 2.0, "mtre_before_mm": 5.0,
                                      "folds_percent": 0.0, "pairs": 1, "mtre_mm_ci_low": 1.8,
                                      "mtre_mm_ci_high": 2.2}]), directory, "lung")
    curves = pd.DataFrame([{"experiment": "retina", "method": m, "train_condition": "none", "seed": 0, "step": step,
                            "val_dice": 0.6 - 0.3 / step} for m in ("carl", "gradicon") for step in (10, 20, 30, 40)])
    tables.write_table(tables.plateau(curves), directory, "plateau")


def test_claims_pass_and_fail_on_the_numbers(tmp_path):
    _tables(tmp_path)
    assert [c.passed for c in claims.check_all(tmp_path)] == [True] * 10
    _tables(tmp_path, carl_shift_dice=0.30, twostep_width=0.1)
    results = [c.passed for c in claims.check_all(tmp_path)]
    # CARL no longer flat: claims 2 and 10 (with IO) fail, and claim 9 (GradICON (IO) far below CARL)
    assert results == [True, False, False, True, True, True, True, True, False, False]
    text = claims.render(claims.check_all(tmp_path))
    assert text.count("FAIL") == 4 and "| 3 |" in text
    # the retina claims state intervals and the paired test on the same pairs
    assert "0.700 [0.685, 0.715]" in text and "Wilcoxon p = 0.12, n = 4" in text


def test_missing_rows_make_a_claim_fail_not_vanish(tmp_path):
    _tables(tmp_path)
    tables.write_table(pd.DataFrame([{"method": "x", "train_condition": "none", "test_set": "test",
                                      "test_condition": "none", "dice": 1.0, "dice_std": 0.0, "dice_before": 0.0,
                                      "folds_percent": 0.0, "pairs": 1}]), tmp_path, "retina")
    tables.write_table(pd.DataFrame([{"method": "carl", "case": "[U,U]", "median_error_vox": 0.2}]), tmp_path,
                       "equivariance")
    checked = claims.check_all(tmp_path)
    for number in (0, 4):  # no gradicon retina rows; no carl [W,U] row
        assert not checked[number].passed and "not measured" in checked[number].measured
    # titled by the claim it could not check, as when measured, not by the function that checks it
    assert checked[0].text.startswith("GradICON registers not-shifted pairs")
    assert checked[4].text == "CARL is [W,U]-equivariant; the U-Net baselines are only [U,U]-equivariant"


def _curves(experiment: str, method: str, steps, scores, score: str = "val_dice") -> list[dict]:
    return [{"experiment": experiment, "method": method, "train_condition": "none", "seed": 0, "step": int(step),
             score: float(value)} for step, value in zip(steps, scores)]


def test_plateau_is_the_gain_over_the_last_quarter_of_the_steps():
    steps = np.arange(5, 105, 5)
    # exact lines: a zero-width interval, so the verdict is the gain against the bound
    curves = pd.DataFrame(_curves("retina", "rising", steps, 0.1 * steps / 25)
                          + _curves("retina", "flat", steps, 0.5 + 0.001 * steps / 25)
                          + _curves("lung", "gradicon", steps, 5 - steps / 25, "val_mtre_mm")
                          + _curves("lung", "voxelmorph", steps, 5 - 0.01 * steps / 25, "val_mtre_mm"))
    table = tables.plateau(curves).set_index("method")
    assert table.loc["rising", "gain_last_quarter"] == pytest.approx(0.1) and table.loc["rising", "plateau"] == "not yet"
    assert table.loc["flat", "gain_last_quarter"] == pytest.approx(0.001) and table.loc["flat", "plateau"] == "yes"
    # mTRE fell by 1 mm over the quarter, against a bound of 0.1 mm: the 3-D runs are judged too
    assert table.loc["gradicon", "gain_last_quarter"] == pytest.approx(1.0) and table.loc["gradicon", "plateau"] == "not yet"
    assert table.loc["voxelmorph", "plateau"] == "yes" and np.isnan(table.loc["voxelmorph", "steps_needed"])
    claim = claims.claim_plateau(tables.plateau(curves))
    assert not claim.passed and "rising/none/seed0 +0.100 [+0.100, +0.100] (100 steps): not yet" in claim.measured
    assert "lung gradicon/none/seed0 +1.000" in claim.measured  # stated, not judged
    passing = claims.claim_plateau(tables.plateau(curves[curves.method != "rising"]))
    assert passing.passed and "1 at plateau, 0 undecided, 0 not yet" in passing.measured


def test_plateau_gain_is_the_trend_not_one_noisy_validation_point():
    # flat at 0.5, the last of the four points in the last quarter 0.012 high: two-point difference
    # 0.012 (> the bound), fitted line over the quarter (x 70..100, span 25): 0.009
    scores = [0.4, 0.45, 0.48, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.512]
    curves = pd.DataFrame(_curves("retina", "noisy", 10 * np.arange(1, 11), scores))
    row = tables.plateau(curves).iloc[0]
    assert row.gain_last_quarter == pytest.approx(0.009) and row.final == 0.512
    assert row.plateau == "undecided"  # four points cannot tell 0.009 from the bound 0.01


def test_plateau_trend_has_its_95_percent_interval():
    """A line through exact points has no uncertainty; noisy points give the t interval of the slope."""
    steps = np.arange(10, 110, 10)
    exact = 0.5 + 0.0004 * steps
    noisy = 0.5 + np.array([0.0, 0.004, -0.003, 0.002, 0.0, 0.003, -0.004, 0.001, 0.003, -0.002])
    curves = pd.DataFrame(_curves("retina", "exact", steps, exact) + _curves("retina", "noisy", steps, noisy))
    table = tables.plateau(curves).set_index("method")
    assert table.loc["exact", "points"] == 4  # steps 70..100: the last quarter and the point before it
    assert table.loc["exact", "gain_ci_low"] == pytest.approx(0.01) == table.loc["exact", "gain_ci_high"]
    low, high = table.loc["noisy", ["gain_ci_low", "gain_ci_high"]]
    fit = stats.linregress(steps[-4:], noisy[-4:])
    half = stats.t.ppf(0.975, 2) * fit.stderr * 25
    assert low == pytest.approx(fit.slope * 25 - half) and high == pytest.approx(fit.slope * 25 + half)
    assert low < table.loc["noisy", "gain_last_quarter"] < high and high - low > 0.01  # four points tell little
    claim = claims.claim_plateau(tables.plateau(curves))
    assert f"noisy/none/seed0 {table.loc['noisy', 'gain_last_quarter']:+.3f} [{low:+.3f}, {high:+.3f}]" in claim.measured


def test_plateau_interval_widens_for_correlated_validation_points():
    """Dense validation points that wander together (a random walk of the weights) carry less
    information than as many independent ones: the interval must say so, and must cover the true
    trend (zero here) about as often as it claims."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 41)
    covered_walk = covered_naive = 0
    widths = []
    for trial in range(300):
        walk = np.cumsum(rng.normal(0, 0.002, 40)) * 0.6 + rng.normal(0, 0.001, 40)
        gain, low, high = tables._trend(steps, walk, 10.0)
        fit = stats.linregress(steps, walk)
        naive = stats.t.ppf(0.975, 38) * fit.stderr * 10
        widths.append((high - low) / (2 * naive))
        # the walk has no trend in expectation: does each interval contain 0?
        covered_walk += low <= 0 <= high
        covered_naive += abs(fit.slope * 10) <= naive
    assert np.median(widths) > 1.5  # correlated points: a wider interval than the independent-points one
    assert covered_walk / 300 > covered_naive / 300 + 0.15


def test_independent_points_keep_the_plain_interval():
    rng = np.random.default_rng(1)
    steps = np.arange(1, 41)
    widths = []
    for trial in range(200):
        scores = rng.normal(0, 0.003, 40)
        gain, low, high = tables._trend(steps, scores, 10.0)
        fit = stats.linregress(steps, scores)
        widths.append((high - low) / (2 * stats.t.ppf(0.975, 38) * fit.stderr * 10))
    assert np.median(widths) < 1.1


def test_steps_to_plateau_of_a_saturating_curve():
    """On an exact exponential c - a exp(-t / tau) the steps needed have a closed form: the least T
    with a (exp(-0.75 T / tau) - exp(-T / tau)) <= bound."""
    tau, a = 400.0, 0.3
    steps = np.arange(20, 1020, 20)
    scores = 0.7 - a * np.exp(-steps / tau)
    curves = pd.DataFrame(_curves("retina", "carl", steps, scores))
    row = tables.plateau(curves).iloc[0]
    assert row.plateau != "yes"  # it still rises by 0.021 over its last quarter
    candidates = np.arange(1000, 20000)
    expected = candidates[a * (np.exp(-0.75 * candidates / tau) - np.exp(-candidates / tau)) <= 0.01][0]
    assert row.steps_needed == pytest.approx(expected, rel=0.01)
    # a straight rising line never saturates within the horizon
    line = tables.plateau(pd.DataFrame(_curves("retina", "line", steps, 0.3 + 0.0001 * steps))).iloc[0]
    assert line.plateau == "not yet" and np.isinf(line.steps_needed)


def test_validation_points_crowd_the_last_quarter():
    from equireg.experiments import training_runs
    steps = training_runs.validation_steps(1300)
    last_quarter = [step for step in steps if step >= 0.75 * 1300]
    assert steps[-1] == 1300 and steps == sorted(set(steps))
    assert len(last_quarter) == training_runs.LAST_QUARTER_VALIDATIONS + 1
    assert len(steps) - len(last_quarter) == int(0.75 * training_runs.VALIDATIONS_PER_RUN) - 1 or len(steps) < 60
    assert training_runs.validation_steps(2) == [1, 2]


def _ranks(directory):
    return tables.ranking(tables.read(directory, "retina_pairs"), tables.lung_runs([]))


def test_leaderboards_give_each_method_its_interval_and_rank(tmp_path):
    _tables(tmp_path)
    board = tables.leaderboard_retina(tables.read(tmp_path, "retina"), _ranks(tmp_path))
    assert list(board.method) == ["unregistered", "carl", "gradicon"]
    assert list(board.columns) == ["method", "dice_none", "dice_shift", "rank_none", "rank_shift", "pairs"]
    assert board.set_index("method").loc["gradicon", "dice_none"] == "0.700 [0.685, 0.715]"
    assert board.set_index("method").loc["unregistered", "dice_shift"] == "0.100"
    # 4 pairs cannot show a difference at p < 0.05 (the smallest two-sided Wilcoxon p is 0.125): a tie
    assert board.set_index("method").loc["gradicon", "rank_shift"] == "1 [1, 1]"
    assert board.set_index("method").loc["carl", "pairs"] == "4"
    lung = tables.leaderboard_lung(tables.read(tmp_path, "lung"), _ranks(tmp_path)).set_index("method")
    assert lung.loc["gradicon", "mtre_mm"] == "2.00 [1.80, 2.20]" and lung.loc["unregistered", "mtre_mm"] == "5.00"
    assert "nan" not in tables.to_markdown(tables.leaderboard_lung(tables.read(tmp_path, "lung"), _ranks(tmp_path)))


def test_leaderboards_add_io_rows_that_readers_see_as_method_io(tmp_path):
    _tables(tmp_path)
    io = tables.retina(tables.read(tmp_path, "retina_io"), tuple(tables.IO_KEYS))
    board = tables.leaderboard_retina(tables.read(tmp_path, "retina"), _ranks(tmp_path), io)
    assert list(board.method) == ["unregistered", "carl", "gradicon", "carl", "gradicon"]
    assert list(board.io_steps) == ["", "", "", "50", "50"]
    assert board.iloc[3].rank_none == "" and board.iloc[3].dice_none == "0.530 [0.515, 0.545]"
    shown = tables.for_readers(board)
    assert list(shown.method) == ["unregistered", "CARL", "GradICON", "CARL (IO)", "GradICON (IO)"]
    lung_io = tables.lung(tables.read(tmp_path, "lung_io"))
    lung = tables.leaderboard_lung(tables.read(tmp_path, "lung"), _ranks(tmp_path), lung_io)
    assert list(tables.for_readers(lung).method) == ["unregistered", "GradICON", "GradICON (IO)"]
    assert lung.iloc[2].mtre_mm.startswith("1.90 [") and lung.iloc[2].pairs == "3"


def test_ranks_of_the_lung_and_the_retina_are_in_one_table(tmp_path):
    rng = np.random.default_rng(0)
    lung = pd.DataFrame([{"method": m, "seed": 0, "pair": i, "mtre_mm": level + 0.05 * rng.normal(),
                          "mtre_before_mm": 5.0, "dice_lung": 0.9, "hd95_lung_mm": level, "sdlogj": 0.1,
                          "folds_percent": 0.0}
                         for m, level in (("good", 1.0), ("poor", 3.0)) for i in range(12)])
    ranks = tables.ranking(tables.retina_pairs([]), lung)
    assert list(ranks.method) == ["good", "poor"] and list(ranks["rank"]) == [1, 2]
    assert set(ranks.experiment) == {"lung"} and ranks.score_mtre.iloc[0] == 1.0


def test_io_claims_fail_when_io_harms_or_rescues(tmp_path):
    _tables(tmp_path)
    io = tables.read(tmp_path, "retina_io")
    worse = io.assign(dice=lambda frame: frame.dice - 0.2)  # IO lowers every Dice by 0.2
    tables.write_table(worse, tmp_path, "retina_io")
    checked = claims.check_all(tmp_path)
    assert not checked[7].passed and "carl none: Dice -0.190 [-0.190, -0.190]" in checked[7].measured
    rescued = io.assign(dice=lambda frame: frame.dice.where(
        (frame.method != "gradicon") | (frame.test_condition != "shift"), 0.6))
    tables.write_table(rescued, tmp_path, "retina_io")
    checked = claims.check_all(tmp_path)
    assert checked[7].passed and not checked[8].passed  # GradICON (IO) at 0.6 on shifted pairs: not far below CARL
    (tmp_path / "retina_io.csv").unlink()
    checked = claims.check_all(tmp_path)
    assert [c.passed for c in checked[7:]] == [False] * 3 and "not measured" in checked[9].measured


def test_leaderboards_show_display_names_and_their_csv_keeps_method_ids(tmp_path):
    _tables(tmp_path)
    board = tables.leaderboard_retina(tables.read(tmp_path, "retina"), _ranks(tmp_path))
    tables.write_table(board, tmp_path, "leaderboard_retina", shown=tables.for_readers(board))
    assert list(tables.read(tmp_path, "leaderboard_retina").method) == ["unregistered", "carl", "gradicon"]
    assert "| CARL | " in (tmp_path / "leaderboard_retina.md").read_text()
    assert "GradICON & " in (tmp_path / "leaderboard_retina.tex").read_text()
    page = summary.fragment(pd.DataFrame([{"claim": 1, "result": "PASS"}]), {"leaderboard_retina": board})
    assert "<td>CARL</td>" in page and "<td>carl</td>" not in page


def test_landing_page_reads_each_leaderboard_by_its_name(tmp_path):
    _tables(tmp_path)
    tables.write_table(tables.leaderboard_retina(tables.read(tmp_path, "retina"), _ranks(tmp_path)), tmp_path,
                       "leaderboard_retina")
    tables.write_table(tables.leaderboard_lung(tables.read(tmp_path, "lung"), _ranks(tmp_path)), tmp_path,
                       "leaderboard_lung")
    claims.write(tmp_path, tmp_path / "claims.md", csv_path=tmp_path / "claims.csv")
    written = ["leaderboard_lung", "leaderboard_retina"]  # no brain: a preset may run it on demand
    summary.write(tmp_path / "claims.csv", [tmp_path / f"{name}.csv" for name in written], tmp_path / "summary.html")
    page = (tmp_path / "summary.html").read_text()
    for name, heading in summary.LEADERBOARDS.items():
        assert (f"<h3>{heading}</h3>" in page and f"equireg-{name}" in page) == (name in written)
    assert page.index("equireg-leaderboard_retina") < page.index("equireg-leaderboard_lung")  # in LEADERBOARDS order
    assert "<td>5.00</td>" in page  # cells as written, not re-read as numbers
    with pytest.raises(ValueError, match="not leaderboards"):
        summary.write(tmp_path / "claims.csv", [tmp_path / "retina.csv"], tmp_path / "other.html")


def test_the_table_name_lists_that_the_workflow_imports_agree():
    for names in (tables.NAMES, tables.BRAIN_NAMES):  # landing page tables first, in LEADERBOARDS order
        boards = [name for name in names if name.startswith("leaderboard_")]
        assert names[:len(boards)] == boards
        assert boards == [name for name in summary.LEADERBOARDS if name in names]
    assert set(summary.LEADERBOARDS) <= set(tables.NAMES) | set(tables.BRAIN_NAMES)
    assert set(reproduction.TABLES) <= set(tables.NAMES)


def test_lung_claim_compares_each_method_with_the_classical_one_on_the_same_pairs():
    lung_pairs = pd.DataFrame([{"method": method, "seed": 0, "pair": i, "mtre_mm": mtre + 0.1 * i,
                                "mtre_before_mm": 5.0, "folds_percent": 0.0}
                               for method, mtre in (("classical", 1.0), ("carl", 2.0)) for i in range(4)])
    lung = pd.DataFrame([
        {"method": m, "mtre_mm": v, "mtre_before_mm": 5.0, "mtre_mm_ci_low": v - 0.1, "mtre_mm_ci_high": v + 0.1}
        for m, v in (("carl", 2.15), ("classical", 1.15))])
    claim = claims.claim_lung(lung, None, lung_pairs)
    assert claim.passed and "against the classical method" in claim.measured
    assert "carl 1.000 [1.000, 1.000], Wilcoxon p = 0.12, n = 4" in claim.measured

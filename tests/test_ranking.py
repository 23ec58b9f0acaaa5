"""Ranks with their uncertainty: paired signed-rank tests (checked against scipy), Holm's correction,
Learn2Reg-style scores and bootstrap rank intervals on scores whose order is known."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from equireg.ranking import Metric, holm, rank_methods, rank_scores, rank_text, wins
from equireg.uncertainty import signed_rank_p

METRICS = [Metric("dice", "dice", True), Metric("dsc30", "dice", True, hardest_by="dice_before"),
           Metric("hd95", "hd95", False), Metric("sdlogj", "sdlogj", False)]


@pytest.mark.parametrize("cases", [3, 8, 13, 14, 24, 50, 60])
def test_signed_rank_p_is_scipys_wilcoxon_with_zsplit(cases):
    """Exact, permutation and normal regimes, with ties and zeros as bootstrap resamples make them."""
    rng = np.random.default_rng(cases)
    rows = []
    for trial in range(40):
        d = rng.normal(0.3, 1.0, cases)
        if trial % 2:
            d = np.round(d, 1)[rng.integers(0, cases, cases)]  # ties and zeros
        rows.append(d)
    rows = np.array(rows)
    expected = [stats.wilcoxon(d, zero_method="zsplit").pvalue if d.any() else 1.0 for d in rows]
    np.testing.assert_allclose(signed_rank_p(rows), expected, rtol=1e-12, atol=0)


def test_holm_adjusts_step_down_and_keeps_the_order():
    np.testing.assert_allclose(holm(np.array([0.04, 0.01, 0.03, 0.5])), [0.09, 0.04, 0.09, 0.5])
    assert holm(np.array([0.6, 0.6])).max() == 1.0


def test_rank_scores_map_wins_to_learn2reg_scores_with_shared_ties():
    np.testing.assert_allclose(rank_scores(np.array([0, 2, 1])), [0.1, 1.0, 0.55])
    np.testing.assert_allclose(rank_scores(np.array([1, 1, 0])), [0.775, 0.775, 0.1])


def _table(levels, pairs=24, seed=0):
    """Per method a Dice level; HD95 and SDlogJ follow it (better Dice, better everything)."""
    rng = np.random.default_rng(seed)
    rows = []
    for pair in range(pairs):
        before, difficulty = rng.uniform(0.1, 0.4), rng.normal(0, 0.05)
        for method, level in levels.items():
            rows.append({"method": method, "pair": pair, "dice_before": before,
                         "dice": level + difficulty + 0.01 * rng.normal(),
                         "hd95": 5 - 4 * level + 0.05 * rng.normal(), "sdlogj": 0.3 - 0.2 * level + 0.005 * rng.normal()})
    return pd.DataFrame(rows)


def test_known_order_is_ranked_with_tight_intervals():
    ranked = rank_methods(_table({"good": 0.8, "fair": 0.6, "poor": 0.3}), METRICS, resamples=200)
    assert list(ranked.method) == ["good", "fair", "poor"]
    assert list(ranked["rank"]) == [1, 2, 3]
    assert (ranked.rank_low == ranked["rank"]).all() and (ranked.rank_high == ranked["rank"]).all()
    assert ranked.score.iloc[0] == pytest.approx(1.0) and ranked.cases.iloc[0] == 24
    assert rank_text(ranked.iloc[1]) == "2 [2, 2]"


def test_equal_methods_share_a_rank_and_close_ones_have_overlapping_intervals():
    table = _table({"a": 0.70, "b": 0.70, "c": 0.30}, pairs=12)
    twin = table[table.method == "a"].assign(method="twin")
    ranked = rank_methods(pd.concat([table[table.method != "b"], twin]), METRICS, resamples=100).set_index("method")
    assert ranked.loc["a", "rank"] == ranked.loc["twin", "rank"] == 1 and ranked.loc["c", "rank"] == 3
    # a and b differ by noise alone: whatever their ranks, their intervals must overlap
    ranked = rank_methods(table, METRICS, resamples=200).set_index("method")
    assert max(ranked.loc[["a", "b"], "rank_low"]) <= min(ranked.loc[["a", "b"], "rank_high"])
    assert ranked.loc["c", "rank_low"] == 3


def test_a_lower_is_better_metric_ranks_the_lower_value_first():
    """Same Dice for both; only HD95 separates them, and lower is better. Reading HD95 the wrong way
    round (a sign error) would put "rough" first."""
    table = _table({"smooth": 0.7, "rough": 0.7})
    table["dice"] = table.groupby("pair")["dice"].transform("first")
    table.loc[table.method == "rough", "hd95"] += 1.0
    ranked = rank_methods(table, [Metric("dice", "dice", True), Metric("hd95", "hd95", False)], resamples=50)
    assert list(ranked.method) == ["smooth", "rough"] and list(ranked["rank"]) == [1, 2]
    assert list(wins(np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]] * 2) + [[0], [1]], False)) == [1, 0]


def test_dsc30_compares_the_cases_with_the_lowest_unregistered_dice():
    """"steady" is better only on the hard pairs; on the rest "peaky" is, by a little."""
    rows = []
    for pair in range(40):
        hard = pair < 12
        for method in ("steady", "peaky"):
            dice = 0.6 + (0.1 if method == "steady" else -0.1) * hard + (0.01 if method == "peaky" else 0) * (not hard)
            rows.append({"method": method, "pair": pair, "dice_before": 0.1 if hard else 0.5,
                         "dice": dice + 0.001 * pair})
    table = pd.DataFrame(rows)
    ranked = rank_methods(table, [Metric("dsc30", "dice", True, hardest_by="dice_before")], resamples=0)
    assert list(ranked.method) == ["steady", "peaky"]


def test_cases_missing_for_a_method_are_left_out_and_no_common_case_is_an_error():
    table = _table({"a": 0.8, "b": 0.3}, pairs=10)
    ranked = rank_methods(table[~((table.method == "a") & (table.pair < 3))], METRICS, resamples=0)
    assert ranked.cases.iloc[0] == 7
    with pytest.raises(ValueError, match="no case with scores of every method"):
        rank_methods(pd.concat([table[(table.method == "a") & (table.pair < 5)],
                                table[(table.method == "b") & (table.pair >= 5)]]), METRICS, resamples=0)


def test_ranks_repeat_exactly():
    table = _table({"a": 0.7, "b": 0.69, "c": 0.68}, pairs=10)
    assert rank_methods(table, METRICS, resamples=100).equals(rank_methods(table, METRICS, resamples=100))

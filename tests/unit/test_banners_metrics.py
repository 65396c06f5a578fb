"""Advertiser pseudo-label metrics against spec 002's worked examples (golden values) and boundaries."""

import numpy as np
import pytest

from app.banners.metrics import advertiser_counts, advertiser_metrics, per_advertiser

# the 10-banner example: CID1 [ajio, ajio, nykaa, nykaa], CID2 [nykaa x3, 1mg], CID3 [ajio, 1mg]
TEN = {"nykaa": [2, 3, 0], "ajio": [2, 0, 1], "1mg": [0, 1, 1]}
CENTRES = np.array([[1.0, 8.0], [4.0, 4.0], [-2.0, 12.0]])
# the same with one more nykaa banner in CID3
TEN_PLUS = {**TEN, "nykaa": [2, 3, 1]}
# the detailed example (six clusters); the spec prints four decimals (0.03125 as 0.0312), hence abs=1e-4
DETAILED_1 = [[10, 2, 2, 2, 2, 2], [5, 1, 1, 1, 0, 0], [12, 3, 3, 3, 3, 0]]
DETAILED_2 = [[8, 4, 4, 4, 0, 0], [3, 3, 2, 0, 0, 0], [9, 6, 6, 3, 0, 0]]


def _m(table):
    return np.array(list(table.values()), dtype=float)


def test_ten_banner_example_from_labels():
    advs = ["ajio", "ajio", "nykaa", "nykaa", "nykaa", "nykaa", "nykaa", "1mg", "ajio", "1mg"]
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    names, counts = advertiser_counts(np.array(advs), np.array(labels), 3)
    got = dict(zip(names.tolist(), counts.tolist(), strict=True))
    assert got == TEN


@pytest.mark.parametrize("table, metric, per_nykaa, aggregate", [
    (TEN, "recall", 3 / 5, 6 / 10),
    (TEN_PLUS, "recall", 3 / 6, 6 / 11),
    (TEN, "heuristic1", 3 / 15, 5 / 20),
    (TEN_PLUS, "heuristic1", 3 / 24, 9 / 44),
    (TEN, "heuristic2", 3 / 15, 5 / 20),  # spec writes 3/20 for nykaa; its own formula gives 3/(3*1)/5
    (TEN_PLUS, "heuristic2", 3 / 36, 4 / 22),  # spec writes 3/30; 3/((2+1)(1+1))/6 = 3/36
])
def test_ten_banner_example(table, metric, per_nykaa, aggregate):
    counts = _m(table)
    assert per_advertiser(counts)[metric][0] == pytest.approx(per_nykaa)
    assert advertiser_metrics(counts)[metric] == pytest.approx(aggregate)


@pytest.mark.parametrize("metric, best, worst", [
    ("recall", 5 / 5, 2 / 5), ("heuristic1", 5 / 5, 2 / 20), ("heuristic2", 5 / 5, 2 / 30)])
def test_best_and_worst_cases(metric, best, worst):
    per = per_advertiser(np.array([[5, 0, 0], [2, 2, 1]]))
    assert per[metric].tolist() == pytest.approx([best, worst])


def test_heuristic3_nykaa_is_five_halves():
    per = per_advertiser(_m(TEN), CENTRES)
    # (Dist(CID2, CID1) * 3/5 + Dist(CID2, CID3) * 1/5) / 2 = (5 * 3/5 + 10 * 1/5) / 2
    assert per["heuristic3"][0] == pytest.approx(5 / 2)
    # ajio: peak CID1, distances 5 and 5, weights 1/3 and 2/3; 1mg: tie, either peak gives 25/4
    assert per["heuristic3"].tolist() == pytest.approx([5 / 2, 5 / 2, 25 / 4])
    assert advertiser_metrics(_m(TEN), CENTRES)["heuristic3"] == pytest.approx((5 / 2 + 5 / 2 + 25 / 4) / 10)


@pytest.mark.parametrize("rows, recall_sum", [(DETAILED_1, 0.0312), (DETAILED_2, 0.0221)])
def test_detailed_example_recall(rows, recall_sum):
    assert advertiser_metrics(np.array(rows))["recall_sum"] == pytest.approx(recall_sum, abs=1e-4)


@pytest.mark.parametrize("rows, h1, h2", [
    (DETAILED_1, [0.0455, 0.1562, 0.0385], [0.0021, 0.0781, 0.0020]),
    (DETAILED_2, [0.0308, 0.0625, 0.0234], [0.0032, 0.0312, 0.0019]),
])
def test_detailed_example_per_advertiser(rows, h1, h2):
    per = per_advertiser(np.array(rows))
    assert per["heuristic1"].tolist() == pytest.approx(h1, abs=1e-4)
    assert per["heuristic2"].tolist() == pytest.approx(h2, abs=1e-4)


def test_detailed_example_aggregates():
    two = advertiser_metrics(np.array(DETAILED_2))
    assert two["heuristic1"] == pytest.approx(0.0323, abs=1e-4)  # (8/13 + 3/6 + 9/16) / 52
    assert two["heuristic2"] == pytest.approx(0.0069, abs=1e-4)  # (8/125 + 3/12 + 9/196) / 52
    one = advertiser_metrics(np.array(DETAILED_1))
    # the spec prints 0.0397 and 0.0014, multiplying where its formula adds
    assert one["heuristic1"] == pytest.approx((10 / 11 + 5 / 4 + 12 / 13) / 52)
    assert one["heuristic2"] == pytest.approx((10 / 243 + 5 / 8 + 12 / 256) / 52)


def test_one_cluster_is_perfectly_pure_and_has_no_distance():
    m = advertiser_metrics(np.array([[4], [2]]), np.zeros((1, 3)))
    assert (m["recall"], m["heuristic1"], m["heuristic2"], m["heuristic3"]) == (1.0, 1.0, 1.0, 0.0)


def test_advertiser_without_banners_is_refused():
    with pytest.raises(ValueError, match=r"\[1\]"):
        per_advertiser(np.array([[1, 0], [0, 0]]))

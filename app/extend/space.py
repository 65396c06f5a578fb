"""The similarity space: score vectors made comparable between users.

A score-table row holds one click probability per keyword. Cosine similarity on those raw vectors
is saturated: every component is positive and dominated by the keyword's base rate, so all vectors
point nearly the same way (on MovieLens the p10-p90 width of users' similarity to a seed set was
0.002, and the fourth decimal decided who was in an audience).

The space keeps what raw cosine measures and spreads it: each row is L2-normalized (its *shape*:
how the user's probabilities compare across keywords), then, per keyword, centred on the
population's mean of those unit vectors and divided by its standard deviation, and L2-normalized
again. A component then says how much more (or less) of the user's profile than the average
user's sits on that keyword; cosine between two users spreads over [-1, 1] (width about 0.4-0.6 on
the same data).

Measured before choosing (ranking eligible non-seeds by their clicks on the seeds' keyword after
the cut, AUC, mean over keywords; ``BENCHMARKS.md``): on MovieLens with DIN scores, raw cosine
0.680, this space 0.681, per-keyword z-scores of the *logits* 0.528 (they drop the shape signal
raw cosine carries), popularity 0.630; on generated data 0.944, 0.962 and 0.946. The mean and
standard deviation are computed once per score table (``space.json`` beside its files) in one
streaming pass, and applied by whoever reads vectors (the similarity actors, the seed reader).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from app.extend.kernel import l2_normalize

SPACE_FILE = "space.json"
#: probabilities are clipped into [EPS, 1 - EPS] before a logit
EPS = 1e-6
#: a keyword whose population std is below this carries no information: its component is 0
MIN_STD = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ScoreSpace:
    """Per-keyword population mean and std of the unit score vectors; ``raw`` = plain L2 (tables
    made before spaces existed)."""

    mean: np.ndarray
    std: np.ndarray
    users: int
    transform: str = "unit_z"

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """(N, K) probabilities -> (N, K) float32 unit vectors in this space."""
        unit = l2_normalize(np.asarray(scores, dtype=np.float32))
        if self.transform == "raw":
            return unit
        z = (unit - self.mean) / np.where(self.std > MIN_STD, self.std, 1.0)
        z[:, self.std <= MIN_STD] = 0.0
        return l2_normalize(z.astype(np.float32))

    def to_json(self) -> dict:
        return {"transform": self.transform, "users": int(self.users),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, data: dict) -> ScoreSpace:
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64),
                   int(data.get("users", 0)), str(data.get("transform", "unit_z")))

    @classmethod
    def raw(cls, k: int) -> ScoreSpace:
        """The old behaviour (L2 of the raw probabilities), for score tables without a space."""
        return cls(np.zeros(k), np.ones(k), 0, "raw")

    @classmethod
    def fit(cls, batches: Iterable[np.ndarray]) -> ScoreSpace:
        """Population mean and std of the unit score vectors, streamed over (N, K) batches."""
        n, total, total_sq = 0, None, None
        for b in batches:
            if not len(b):
                continue
            x = l2_normalize(np.asarray(b, dtype=np.float32)).astype(np.float64)
            total = x.sum(0) if total is None else total + x.sum(0)
            total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
            n += x.shape[0]
        if not n:
            raise ValueError("no scores to fit a similarity space on")
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
        return cls(mean, std, n)


def similarity_spread(scores: np.ndarray) -> dict[str, float | int]:
    """How much users differ in their similarity to the seeds: quantiles and the p90 - p10 width.

    A narrow spread means the ranking is decided by noise: the report warns about it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return {"n": 0}
    p10, p50, p90 = np.quantile(scores, [0.1, 0.5, 0.9])
    return {"n": int(scores.size), "p10": round(float(p10), 6), "p50": round(float(p50), 6),
            "p90": round(float(p90), 6), "width_p10_p90": round(float(p90 - p10), 6)}

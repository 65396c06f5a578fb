"""The similarity space: score vectors made comparable between users.

A score-table row holds one click probability per keyword. Cosine similarity on those raw vectors
measures almost nothing: every component is positive and dominated by the keyword's base rate (a
popular keyword is high for everyone), so all vectors point nearly the same way. On MovieLens the
median cosine between two users' raw vectors was 0.9999, and the fourth decimal decided who was in
an audience.

The space fixes that against the population the table was made from: per keyword, the logit of the
probability (the model's own scale: 0.8 vs 0.9 is as far apart as 0.1 vs 0.2), centred on the population's mean and divided by its standard deviation. A component then says how
much more (or less) likely than the average user this user is to click that keyword; the vector
is L2-normalized, and cosine between two users ranges over [-1, 1]. The mean and standard
deviation are computed once per score table (``space.json`` beside its files) in one streaming
pass, and applied by whoever reads vectors (the similarity actors, the seed reader).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from app.extend.kernel import l2_normalize

SPACE_FILE = "space.json"
#: probabilities are clipped into [EPS, 1 - EPS] before the logit
EPS = 1e-6
#: a keyword whose population std is below this carries no information: its component is 0
MIN_STD = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ScoreSpace:
    """Per-keyword population mean and std of the logit scores; ``raw`` = plain L2 (old tables)."""

    mean: np.ndarray
    std: np.ndarray
    users: int
    transform: str = "logit_z"

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """(N, K) probabilities -> (N, K) float32 unit vectors in this space."""
        scores = np.asarray(scores, dtype=np.float32)
        if self.transform == "raw":
            return l2_normalize(scores)
        z = (logit(scores) - self.mean) / np.where(self.std > MIN_STD, self.std, 1.0)
        z[:, self.std <= MIN_STD] = 0.0
        return l2_normalize(z.astype(np.float32))

    def to_json(self) -> dict:
        return {"transform": self.transform, "users": int(self.users),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, data: dict) -> ScoreSpace:
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64),
                   int(data.get("users", 0)), str(data.get("transform", "logit_z")))

    @classmethod
    def raw(cls, k: int) -> ScoreSpace:
        """The old behaviour (L2 of the raw probabilities), for score tables without a space."""
        return cls(np.zeros(k), np.ones(k), 0, "raw")

    @classmethod
    def fit(cls, batches: Iterable[np.ndarray]) -> ScoreSpace:
        """Population mean and std of the logit scores, streamed over (N, K) batches."""
        n, total, total_sq = 0, None, None
        for b in batches:
            if not len(b):
                continue
            x = logit(b)
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

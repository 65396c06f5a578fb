"""Seed clustering (spec 000 step 2): k-means with k chosen by silhouette, and a coherence verdict.

Many clusters, or a low best silhouette, means the seeds do not share one profile and the
extension is unlikely to be productive; the report says so in a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClusterResult:
    k: int
    silhouette: float | None  # None when k = 1 (no silhouette defined)
    sizes: list[int]
    labels: np.ndarray  # label per clustered seed (of the sample used)
    silhouettes: dict[int, float] = field(default_factory=dict)  # k -> score tried
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "k": self.k,
            "silhouette": self.silhouette,
            "sizes": self.sizes,
            "silhouette_by_k": {str(k): round(v, 4) for k, v in self.silhouettes.items()},
        }


def choose_k(
    x: np.ndarray,
    max_clusters: int,
    seed: int = 0,
    min_silhouette: float = 0.2,
    max_coherent_clusters: int = 5,
    sample: int = 5000,
) -> ClusterResult:
    """Cluster ``x`` (seeds x features) with k in 2..max_clusters, keep the best silhouette.

    A best silhouette below ``min_silhouette`` (the groups overlap) or a k above
    ``max_coherent_clusters`` produces an "incoherent seeds" warning. Fewer than 3 distinct seeds:
    k = 1 and no silhouette.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if x.shape[0] > sample:
        x = x[rng.choice(x.shape[0], sample, replace=False)]
    n = x.shape[0]
    distinct = np.unique(x, axis=0).shape[0]
    best_k, best_s, best_labels = 1, None, np.zeros(n, dtype=np.int64)
    scores: dict[int, float] = {}
    for k in range(2, min(max_clusters, distinct - 1, n - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
        if np.unique(labels).size < 2:
            continue
        s = float(silhouette_score(x, labels, sample_size=min(n, 2000), random_state=seed))
        scores[k] = s
        if best_s is None or s > best_s:
            best_k, best_s, best_labels = k, s, labels
    warnings: list[str] = []
    if best_s is not None and best_s < min_silhouette:
        warnings.append(
            f"incoherent seeds: best silhouette {best_s:.3f} (k={best_k}) is below {min_silhouette}; "
            "the seeds do not form clear groups, extension may not be productive"
        )
    if best_k > max_coherent_clusters:
        warnings.append(
            f"incoherent seeds: they split into {best_k} clusters (more than {max_coherent_clusters}); "
            "consider submitting each group separately"
        )
    sizes = np.bincount(best_labels, minlength=best_k).tolist()
    return ClusterResult(best_k, best_s if best_k > 1 else None, sizes, best_labels, scores, warnings)

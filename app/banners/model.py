"""The stored clustering: k-means centres in the (optional) PCA space, and the PCA itself.

Saved as ``models/banner_clusters/<version>/model.npz`` (plus the sweep report and the resolved
config) and registered under ``banner_clusters`` in ``registry.json``. Assignment is the nearest
centre by Euclidean distance after the same projection the clustering was fitted in, so the batch
job, the Serve route and the sweep give a banner the same cluster.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.banners import schema as S
from app.config import dump_config
from app.errors import SchemaError
from app.registry import Registry, new_version
from app.storage import Storage

ASSIGN_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class ClusterModel:
    """``centres`` (k, p); ``pca_mean`` (d,) and ``pca_components`` (p, d), or None without PCA."""

    centres: np.ndarray
    dim: int
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])

    def project(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SchemaError(f"embeddings must be (n, {self.dim}), got shape {x.shape}")
        if self.pca_components is None:
            return x
        return (x - self.pca_mean) @ self.pca_components.T

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster id, distance to its centre) of each row, in chunks of bounded memory."""
        c = self.centres.astype(np.float32)
        c_sq = (c**2).sum(axis=1)
        labels = np.empty(len(x), dtype=np.int32)
        dist = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), ASSIGN_CHUNK_ROWS):
            z = self.project(x[start : start + ASSIGN_CHUNK_ROWS])
            d2 = (z**2).sum(axis=1)[:, None] - 2.0 * z @ c.T + c_sq[None, :]
            best = np.argmin(d2, axis=1)
            labels[start : start + len(z)] = best
            dist[start : start + len(z)] = np.sqrt(np.maximum(d2[np.arange(len(z)), best], 0.0))
        return labels, dist

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"centres": self.centres, "dim": np.array(self.dim)}
        if self.pca_components is not None:
            arrays |= {"pca_mean": self.pca_mean, "pca_components": self.pca_components}
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClusterModel:
        with np.load(io.BytesIO(data)) as z:
            pca = "pca_components" in z
            return cls(z["centres"].astype(np.float32), int(z["dim"]),
                       z["pca_mean"].astype(np.float32) if pca else None,
                       z["pca_components"].astype(np.float32) if pca else None)


def model_dir(version: str) -> str:
    return f"models/{S.MODEL_NAME}/{version}"


def register_model(storage: Storage, model: ClusterModel, report: dict[str, Any], cfg: Any) -> str:
    """Save the model with its sweep report and config; make it the current ``banner_clusters``."""
    version = new_version()
    rel = model_dir(version)
    storage.write_bytes(f"{rel}/model.npz", model.to_bytes())
    storage.write_json(f"{rel}/metrics.json", report)
    storage.write_text(f"{rel}/config.yaml", dump_config(cfg))
    info = {"path": rel, "k": model.k, "dim": model.dim,
            "pca_components": None if model.pca_components is None else int(model.pca_components.shape[0]),
            "chosen": report.get("chosen")}
    Registry(storage).add_model_version(S.MODEL_NAME, version, info, make_current=True)
    return version


def load_current(storage: Storage) -> tuple[str, ClusterModel]:
    """(version, model) of the current clustering; ModelNotReady before the first sweep."""
    version, info = Registry(storage).current_model(S.MODEL_NAME)
    return version, ClusterModel.from_bytes(storage.read_bytes(f"{info['path']}/model.npz"))

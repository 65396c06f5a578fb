"""Export: a SavedModel with a named serving signature, and the in-process batch scorer.

Model directory layout (``<root>/models/din/<version>/``)::

    saved_model/     TF SavedModel; signature "serving_default": the MODEL_FEATURES (int64,
                     scalars (N,), histories (N, hist_len)) -> {"prob": float32 (N,)}.
                     TF Serving loads it as is (mount the version directory's saved_model/ as
                     <model_base_path>/<n>/); tf.keras.models.load_model reloads the Keras model.
    scorer.json      hist_len, num_keywords, keywords (index 1 first), features, output name
    metrics.json     test metrics of DIN, baselines and oracle (app.train.evaluate)
    config.yaml      the resolved TrainConfig
    gate.json        the evaluation-gate decision (app.train.gate)
    train/           Ray Train run directory (per-epoch checkpoints)

:class:`BatchScorer` is what the score generator and the service use: it loads the signature
once and scores NumPy batches, or every user against every keyword.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

import numpy as np

from app.errors import SchemaError
from app.registry import Registry
from app.storage import Storage
from app.train.din import MODEL_FEATURES

SAVED_MODEL = "saved_model"
SCORER_META = "scorer.json"
SIGNATURE = "serving_default"
OUTPUT = "prob"
SCALAR_FEATURES = ("age", "gender", "target_kwi")
USER_FEATURES = ("age", "gender", "hist_kwi", "hist_show_counts", "hist_click_counts")


def model_dir(name: str, version: str) -> str:
    """Root-relative directory of a model version."""
    return f"models/{name}/{version}"


def export_saved_model(model, export_dir: str, hist_len: int) -> None:
    """Save ``model`` as a SavedModel with the ``serving_default`` signature (flat int64 inputs)."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec([None] if n in SCALAR_FEATURES else [None, hist_len], tf.int64, name=n)
        for n in MODEL_FEATURES
    ]

    @tf.function(input_signature=specs)
    def serve(*args):
        prob = model(dict(zip(MODEL_FEATURES, args, strict=True)), training=False)
        return {OUTPUT: tf.reshape(tf.cast(prob, tf.float32), [-1])}

    model.save(export_dir, save_format="tf", include_optimizer=False, signatures={SIGNATURE: serve})


def write_scorer_meta(
    storage: Storage, rel_dir: str, hist_len: int, num_keywords: int, keywords: list[str]
) -> None:
    storage.write_json(
        posixpath.join(rel_dir, SCORER_META),
        {
            "hist_len": int(hist_len),
            "num_keywords": int(num_keywords),
            "keywords": list(keywords),
            "features": list(MODEL_FEATURES),
            "signature": SIGNATURE,
            "output": OUTPUT,
        },
    )


def _read_json(path: str) -> dict[str, Any]:
    if "://" in path:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        with fs.open_input_stream(p) as fh:
            return json.loads(fh.read())
    with open(path) as fh:
        return json.load(fh)


class BatchScorer:
    """Click probabilities from an exported DIN model, in process.

    :meth:`score_all_keywords` uses the model's :class:`~app.train.keyword_grid.KeywordGrid`
    (users x keywords in one pass, ``grid_users`` users at a time) when the model is a DIN, and
    the serving signature row by row otherwise.

    Attributes:
        num_keywords: vocabulary size including padding (keyword indices 1..num_keywords-1).
        hist_len: history length the model expects.
        keywords: keyword strings in index order (``keywords[i - 1]`` is index ``i``).
    """

    #: users per KeywordGrid call: big enough to amortize TF's per-call cost, small enough that the
    #: (items x keywords x attention units) intermediate stays in the tens of MB
    grid_users = 1024

    def __init__(self, fn, meta: dict[str, Any], chunk_rows: int = 131072, saved_model: str | None = None):
        self._fn = fn
        self.meta = meta
        self.hist_len = int(meta["hist_len"])
        self.num_keywords = int(meta["num_keywords"])
        self.keywords = list(meta.get("keywords") or [])
        self.chunk_rows = chunk_rows
        self.saved_model = saved_model
        self._grid: Any = None  # KeywordGrid, False when the model is not a DIN, None: not tried
        self._loaded: Any = None

    @classmethod
    def load(cls, model_dir: str, chunk_rows: int = 131072) -> BatchScorer:
        """Load from a model version directory (path or URI) holding saved_model/ and scorer.json."""
        import tensorflow as tf

        meta_path = (
            posixpath.join(model_dir, SCORER_META)
            if "://" in model_dir
            else os.path.join(model_dir, SCORER_META)
        )
        try:
            meta = _read_json(meta_path)
        except (FileNotFoundError, OSError) as exc:
            raise SchemaError(f"{meta_path!r} not found: not an exported model directory") from exc
        path = posixpath.join(model_dir, SAVED_MODEL)
        loaded = tf.saved_model.load(path)
        scorer = cls(loaded.signatures[meta.get("signature", SIGNATURE)], meta, chunk_rows, saved_model=path)
        scorer._loaded = loaded  # keep the variables alive
        return scorer

    def keyword_grid(self):
        """The DIN's all-keywords fast path (app.train.keyword_grid), built on first use from the
        Keras model in the SavedModel; None for a model that is not a DIN (or not loadable as
        Keras), which is then scored row by row through the signature."""
        if self._grid is None:
            self._grid = False
            if self.saved_model is not None:
                import tensorflow as tf

                from app.train import keyword_grid

                try:
                    model = tf.keras.models.load_model(self.saved_model, compile=False)
                except (OSError, ValueError, TypeError):
                    return None
                if keyword_grid.is_din(model):
                    self._grid = keyword_grid.KeywordGrid(model)
        return self._grid or None

    # ------------------------------------------------------------------ checks
    def _check(
        self, batch: dict[str, np.ndarray], names: tuple[str, ...]
    ) -> tuple[dict[str, np.ndarray], int]:
        missing = [k for k in names if k not in batch]
        if missing:
            raise SchemaError(f"batch lacks {missing}; it has {sorted(batch)}")
        out = {k: np.asarray(batch[k], dtype=np.int64) for k in names}
        n = len(out[names[0]])
        for k, v in out.items():
            want = (n,) if k in SCALAR_FEATURES else (n, self.hist_len)
            if v.shape != want:
                raise SchemaError(f"batch feature {k!r} has shape {v.shape}, expected {want}")
        return out, n

    def _run(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        import tensorflow as tf

        res = self._fn(**{k: tf.constant(v) for k, v in feats.items()})
        return res[OUTPUT].numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ scoring
    def score(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities (N,) float32 for rows of age, gender, hist_* (N, hist_len), target_kwi."""
        feats, n = self._check(batch, MODEL_FEATURES)
        if n == 0:
            return np.zeros(0, np.float32)
        kw = feats["target_kwi"]
        if kw.min() < 1 or kw.max() >= self.num_keywords:
            raise SchemaError(
                f"target_kwi must lie in [1, {self.num_keywords - 1}], got {kw.min()}..{kw.max()}"
            )
        out = [
            self._run({k: v[i : i + self.chunk_rows] for k, v in feats.items()})
            for i in range(0, n, self.chunk_rows)
        ]
        return np.concatenate(out)

    def score_all_keywords(self, users: dict[str, np.ndarray]) -> np.ndarray:
        """Scores (N, num_keywords - 1) of every user against every keyword index 1..K, batched."""
        feats, n = self._check(users, USER_FEATURES)
        k = self.num_keywords - 1
        out = np.empty((n, k), dtype=np.float32)
        grid = self.keyword_grid()
        if grid is not None:
            for s in range(0, n, self.grid_users):
                out[s : s + self.grid_users] = grid(*(feats[name][s : s + self.grid_users] for name in USER_FEATURES))
            return out
        per_chunk = max(1, self.chunk_rows // k)
        targets = np.arange(1, k + 1, dtype=np.int64)
        for s in range(0, n, per_chunk):
            m = min(per_chunk, n - s)
            rows = {name: np.repeat(v[s : s + m], k, axis=0) for name, v in feats.items()}
            rows["target_kwi"] = np.tile(targets, m)
            out[s : s + m] = self._run(rows).reshape(m, k)
        return out


def load_current_scorer(storage: Storage, name: str = "din") -> tuple[str, BatchScorer]:
    """(version, scorer) of the registry's current model; ``ModelNotReady`` if there is none."""
    version, info = Registry(storage).current_model(name)
    return version, BatchScorer.load(storage.uri(info.get("path") or model_dir(name, version)))

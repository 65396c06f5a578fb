"""Real data for the strategy: scikit-learn's handwritten digits (1,797 images of 8 x 8 pixels,
shipped inside the scikit-learn wheel, no download) written as "banners": the 64 pixel values are
the embedding, the digit is both the "advertiser" and the truth the chosen K is checked against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.banners import schema as S
from app.banners.synthetic import hex_ids
from app.storage import Storage

DIGITS_DAY = "2026-01-01"


def write_digits(storage: Storage) -> dict[str, Any]:
    """``raw/banners`` and ``raw/banner_truth`` from ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int32)
    ids = hex_ids(np.arange(len(x)), salt=64)
    advertisers = pa.array([f"digit{d}" for d in y], pa.string())
    table = pa.table({
        S.BANNER_ID: ids, S.DAY: pa.array([DIGITS_DAY] * len(x), pa.string()), S.ADVERTISER: advertisers,
        S.EMBEDDING: pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1]),
    })
    for rel in (S.RAW_BANNERS, S.RAW_TRUTH):
        storage.delete(rel)
    storage.makedirs(S.RAW_BANNERS)
    pq.write_table(table, storage.path(S.RAW_BANNERS, "part-000.parquet"), filesystem=storage.fs)
    storage.write_table(S.RAW_TRUTH, pa.table({S.BANNER_ID: ids, S.ADVERTISER: advertisers,
                                               S.TRUE_CLUSTER: pa.array(y)}))
    return {"raw_rows": len(x), "dim": int(x.shape[1]), "classes": int(len(np.unique(y)))}

"""Exact top-N mean cosine similarity of users to seeds: the compute kernel (no Ray here).

A user's score is the mean of its N highest cosine similarities to the seeds (spec 000's
Similarity Generator). Vectors are L2-normalized, so cosine is a dot product and a block of users
against a block of seeds is one float32 GEMM.

Why it is fast and still exact. A naive kernel writes the whole users x seeds similarity matrix
and runs ``np.partition`` over every row (10^10 values for 1M users x 10k seeds). Instead we keep a
running top-N per user and its current N-th value ``thr`` (a lower bound of the final N-th value).
After the first seed block, a new similarity can only change the top-N if it is strictly greater
than ``thr``; one vectorized comparison finds those few candidates (about ``N * ln(S / block)``
per user in total for random order) and only they are merged. The result is the same multiset
of top-N values as a full sort, ties included (an entry equal to ``thr`` cannot change the
multiset), so the mean is exact up to float32 rounding of the dot products.

Two more backends run the same blocked products on a GPU when one is present, keeping a running
top-k instead of the threshold trick: ``tf`` (TensorFlow) and ``torch`` (PyTorch, optional: for
GPU hosts that have a CUDA PyTorch but no CUDA TensorFlow).
"""

from __future__ import annotations

import numpy as np


def _candidates(mask: np.ndarray) -> np.ndarray:
    """Flat indices of the True entries of a C-contiguous bool array.

    ``np.nonzero`` on a bool array costs about as much as the GEMM here; candidates are rare, so
    scan 8 bytes at a time (a uint64 view) and only expand the non-zero words.
    """
    flat = mask.reshape(-1)
    n8 = flat.size // 8 * 8
    words = np.flatnonzero(flat[:n8].view(np.uint64))
    idx = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    idx = idx[flat[idx]]
    if n8 < flat.size:
        tail = np.flatnonzero(flat[n8:]) + n8
        idx = np.concatenate([idx, tail])
    return idx


def _merge_candidates(top: np.ndarray, sims: np.ndarray, mask: np.ndarray) -> None:
    """Merge the masked entries of ``sims`` (rows x w, C-contiguous) into ``top`` (rows x N)."""
    flat_idx = _candidates(mask)
    if flat_idx.size == 0:
        return
    w = sims.shape[1]
    rows = flat_idx // w
    values = sims.reshape(-1)[flat_idx]
    n = top.shape[1]
    urows, starts, counts = np.unique(rows, return_index=True, return_counts=True)
    width = n + int(counts.max())
    pool = np.full((urows.size, width), -np.inf, dtype=np.float32)
    pool[:, :n] = top[urows]
    # position of each candidate inside its row's slot (rows come sorted from the flat scan)
    pos = np.arange(rows.size) - np.repeat(starts, counts)
    seg = np.repeat(np.arange(urows.size), counts)
    pool[seg, n + pos] = values
    pool.partition(width - n, axis=1)
    top[urows] = pool[:, width - n :]


def top_n_mean_numpy(
    users: np.ndarray,
    seeds: np.ndarray,
    top_n: int,
    user_block: int = 512,
    seed_block: int = 1024,
) -> np.ndarray:
    """Mean of each user's ``top_n`` highest dot products with ``seeds`` (float32, exact).

    users: (U, K) float32, seeds: (S, K) float32, both L2-normalized for cosine.
    If there are fewer seeds than ``top_n``, the mean is over all seeds.
    """
    users = np.ascontiguousarray(users, dtype=np.float32)
    seeds_t = np.ascontiguousarray(np.asarray(seeds, dtype=np.float32).T)  # (K, S)
    n_users, n_seeds = users.shape[0], seeds_t.shape[1]
    n = min(top_n, n_seeds)
    out = np.empty(n_users, dtype=np.float32)
    if n_users == 0:
        return out
    if n == 0:
        raise ValueError("no seed vectors to compare with")
    first = min(max(seed_block, n), n_seeds)
    width = max(first, seed_block)
    # flat buffers so every (rows x w) view is C-contiguous
    sim_buf = np.empty(user_block * width, dtype=np.float32)
    mask_buf = np.empty(user_block * width, dtype=bool)
    for u0 in range(0, n_users, user_block):
        ub = users[u0 : u0 + user_block]
        r = ub.shape[0]
        sims = np.matmul(ub, seeds_t[:, :first], out=sim_buf[: r * first].reshape(r, first))
        top = np.partition(sims, first - n, axis=1)[:, first - n :].copy()
        for s0 in range(first, n_seeds, seed_block):
            w = min(s0 + seed_block, n_seeds) - s0
            sims = np.matmul(ub, seeds_t[:, s0 : s0 + w], out=sim_buf[: r * w].reshape(r, w))
            thr = top.min(axis=1)
            mask = np.greater(sims, thr[:, None], out=mask_buf[: r * w].reshape(r, w))
            _merge_candidates(top, sims, mask)
        out[u0 : u0 + r] = top.mean(axis=1, dtype=np.float64)
    return out


def top_n_mean_tf(
    users: np.ndarray,
    seeds: np.ndarray,
    top_n: int,
    user_block: int = 65536,
    seed_block: int = 16384,
) -> np.ndarray:
    """Same result as :func:`top_n_mean_numpy` with TensorFlow (GPU when visible)."""
    import tensorflow as tf

    users = np.asarray(users, dtype=np.float32)
    seeds = np.asarray(seeds, dtype=np.float32)
    n = min(top_n, seeds.shape[0])
    if n == 0:
        raise ValueError("no seed vectors to compare with")
    seed_chunks = [tf.constant(seeds[s : s + seed_block]) for s in range(0, seeds.shape[0], seed_block)]
    out = np.empty(users.shape[0], dtype=np.float32)
    for u0 in range(0, users.shape[0], user_block):
        ub = tf.constant(users[u0 : u0 + user_block])
        top = None
        for chunk in seed_chunks:
            sims = tf.matmul(ub, chunk, transpose_b=True)
            cand = sims if top is None else tf.concat([top, sims], axis=1)
            top = tf.math.top_k(cand, k=n, sorted=False).values
        out[u0 : u0 + ub.shape[0]] = tf.reduce_mean(tf.cast(top, tf.float64), axis=1).numpy()
    return out


def top_n_mean_torch(
    users: np.ndarray,
    seeds: np.ndarray,
    top_n: int,
    user_block: int = 131072,
    seed_block: int = 16384,
    device: str | None = None,
) -> np.ndarray:
    """Same result with PyTorch (CUDA when available): for GPU hosts that carry torch but no
    CUDA build of TensorFlow. Seeds are copied to the device once; users stream through in blocks.
    TF32 is switched off so the products stay float32-exact like the other backends.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = False
    n = min(top_n, seeds.shape[0])
    if n == 0:
        raise ValueError("no seed vectors to compare with")
    seeds_t = torch.as_tensor(np.asarray(seeds, dtype=np.float32), device=dev).T.contiguous()
    out = np.empty(users.shape[0], dtype=np.float32)
    for u0 in range(0, users.shape[0], user_block):
        ub = torch.as_tensor(np.ascontiguousarray(users[u0 : u0 + user_block], dtype=np.float32), device=dev)
        top = None
        for s0 in range(0, seeds_t.shape[1], seed_block):
            sims = ub @ seeds_t[:, s0 : s0 + seed_block]
            cand = sims if top is None else torch.cat([top, sims], dim=1)
            top = torch.topk(cand, k=min(n, cand.shape[1]), dim=1, sorted=False).values
        out[u0 : u0 + ub.shape[0]] = top.double().mean(dim=1).float().cpu().numpy()
    return out


BACKENDS = {"numpy": top_n_mean_numpy, "tf": top_n_mean_tf, "torch": top_n_mean_torch}


def top_n_mean(users: np.ndarray, seeds: np.ndarray, top_n: int, backend: str = "numpy", **blocks) -> np.ndarray:
    if backend not in BACKENDS:
        raise ValueError(f"unknown similarity backend {backend!r} ({' | '.join(BACKENDS)})")
    return BACKENDS[backend](users, seeds, top_n, **blocks)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalization; an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

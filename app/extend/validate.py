"""Validation of audience extension (spec 000's validation.py, done honestly).

Everything is as of the cutting date. The eligible pool is the users with an impression before it
(``eligible: active_before``; a user first seen after it is future information). For a keyword
k: seeds are eligible users who clicked k before the date; each strategy extends them using only
information from before it (a score table made as of the date, features counted before it).
The outcome is measured *after* the date: clicks (and CTR) on k of

- each strategy's audience (the top M eligible non-seeds, M = factor x seeds),
- random: the eligible non-seed pool itself, whose clicks per user are what a random same-size
  audience gets in expectation (no noise from one random draw),
- a popularity baseline: the M most active eligible non-seeds (most impressions before the date),
- on generated data, the oracle: the M non-seeds with the highest true posterior of the seeds'
  planted segment (computed from the generator's planted parameters and pre-date behaviour).

Lifts are clicks-per-user ratios over random, with bootstrap 95% confidence intervals, pooled over
``repeats`` seed draws per keyword (each draw resampled on its own). On generated data also
precision = share of the audience in the seeds' majority planted segment, and its ratio to the
oracle's. ``verdicts`` say in plain words whether the default strategy beat random and
popularity, and which set did when it did not.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app import constants as C
from app.console import get_console
from app.errors import SeedError
from app.extend.config import ExtendConfig
from app.extend.engine import extend_audience
from app.extend.jsd import load_features
from app.extend.scores import history_window, score_table_for
from app.storage import Storage


def epoch(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())


def pooled_ratio_ci(a_parts: list[np.ndarray], b_parts: list[np.ndarray], reps: int,
                    rng: np.random.Generator, chunk: int = 50) -> tuple[float, float, float]:
    """sum_r mean(a_r) / sum_r mean(b_r) and its percentile 95% CI.

    Each draw r (a seed set's audience ``a_r`` and the baseline ``b_r`` it is compared with) is
    resampled on its own, users with replacement, and the ratio of the summed means taken: one
    bootstrap over draws of the same design. An unbounded interval (a resample with no baseline
    clicks) has an infinite upper end.
    """
    a_parts = [np.asarray(a, np.float64) for a in a_parts]
    b_parts = [np.asarray(b, np.float64) for b in b_parts]
    num = sum(a.mean() for a in a_parts)
    den = sum(b.mean() for b in b_parts)
    point = num / den if den > 0 else float("inf")
    ratios = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        ma = sum(a[rng.integers(0, a.size, size=(n, a.size))].mean(axis=1) for a in a_parts)
        mb = sum(b[rng.integers(0, b.size, size=(n, b.size))].mean(axis=1) for b in b_parts)
        ratios.append(np.where(mb > 0, ma / np.maximum(mb, 1e-300), np.inf))
    lo, hi = np.quantile(np.concatenate(ratios), [0.025, 0.975], method="inverted_cdf")
    return float(point), float(lo), float(hi)


def per_user_counts(logs: pa.Table, dids: np.ndarray, keyword: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(clicks, shows) per user of ``dids`` in ``logs`` (optionally one keyword only)."""
    if keyword is not None:
        logs = logs.filter(pc.equal(logs.column(C.KEYWORD), keyword))
    idx = pc.index_in(logs.column(C.DID), value_set=pa.array(dids, pa.string())).to_numpy(zero_copy_only=False)
    click = logs.column(C.IS_CLICK).to_numpy(zero_copy_only=False)
    ok = ~np.isnan(idx.astype(np.float64)) if idx.dtype == object else idx >= 0
    idx = np.asarray(idx[ok], dtype=np.int64)
    click = np.asarray(click[ok], dtype=np.int64)
    clicks = np.bincount(idx[click == 1], minlength=dids.size)
    shows = np.bincount(idx[click == 0], minlength=dids.size)
    return clicks, shows


def segment_posterior(truth: Any, x: np.ndarray, names: list[str], target: int) -> np.ndarray:
    """P(segment = target | age, gender, pre-date shows and clicks) from the planted model."""
    kws = [n.split(":", 1)[1] for n in names if n.startswith("shows:")]
    k = len(kws)
    col = truth.keyword_index(kws)
    ok = col >= 0
    show_p = np.clip(truth.show_matrix[:, col[ok]], 1e-12, 1)  # (S, k_ok)
    click_p = np.clip(truth.click_matrix[:, col[ok]], 1e-12, 1 - 1e-12)
    shows, clicks = x[:, 2 : 2 + k][:, ok], x[:, 2 + k : 2 + 2 * k][:, ok]
    age = np.clip(x[:, 0].astype(np.int64) - 1, 0, truth.age_probs.shape[1] - 1)
    gender = np.clip(x[:, 1].astype(np.int64), 0, truth.gender_probs.shape[1] - 1)
    logp = (
        np.log(np.clip(truth.segment_prior, 1e-12, 1))[None, :]
        + np.log(np.clip(truth.age_probs[:, age].T, 1e-12, 1))
        + np.log(np.clip(truth.gender_probs[:, gender].T, 1e-12, 1))
        + shows @ np.log(show_p).T
        + clicks @ np.log(click_p).T
        + (shows - clicks).clip(0) @ np.log1p(-click_p).T
    )
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p[:, target] / p.sum(axis=1)


def _load_truth(storage: Storage) -> Any:
    if not storage.exists(f"{C.RAW_TRUTH}/model.json"):
        return None
    from app.data.synthetic import Truth

    return Truth.load(storage)


def _set_metrics(name: str, parts: list[np.ndarray], clicks: np.ndarray, shows: np.ndarray,
                 segment: np.ndarray | None, targets: list[int | None]) -> dict[str, Any]:
    """Clicks, shows, CTR (and precision against the planted segment) of a set over the draws."""
    users = int(sum(p.size for p in parts))
    c = int(sum(clicks[p].sum() for p in parts))
    s = int(sum(shows[p].sum() for p in parts))
    out = {"set": name, "users": users, "clicks": c, "shows": s,
           "clicks_per_user": c / max(users, 1), "ctr": c / s if s else None}
    if segment is not None:
        hits = sum(int((segment[p] == t).sum()) for p, t in zip(parts, targets, strict=True))
        out["precision"] = hits / users if users else None
    return out


def run_validation(storage: Storage, cfg: ExtendConfig,
                   progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Validate the strategies over keywords x seed sizes x extension factors; JSON + Markdown.

    Everything is as of the cutting date (``cfg`` with ``as_of`` = the cut): the score table, the
    JSD features, popularity, and the eligible pool. With ``cfg.eligible = "active_before"`` (the
    default) the pool is the users with an impression before the cut; seeds, every strategy's
    audience and the random and popularity baselines all come from it. A user seen only after the
    cut would be future information.
    """
    vcfg = cfg.validation
    stats = history_window(storage, cfg.scores.samples_run)
    cut = vcfg.cutting_date or dt.date.fromisoformat(str(stats["cutting_date"]))
    cut_s = epoch(cut)
    rng = np.random.default_rng(cfg.seed)
    active_only = cfg.eligible == "active_before"
    dids, x, names = load_features(storage, cut, active_only=active_only)
    if dids.size == 0:
        raise SeedError(f"no user has any impression before {cut.isoformat()}: nothing to validate")
    all_users = storage.read_table(C.T_TRAINREADY, columns=[C.DID]).num_rows
    popularity = x[:, 2 : 2 + (x.shape[1] - 2) // 2].sum(axis=1)
    logs = storage.read_table(C.T_LOGS, columns=[C.DID, C.IS_CLICK, C.KEYWORD, C.ACTION_TIME_SECONDS])
    t = logs.column(C.ACTION_TIME_SECONDS)
    before, after = logs.filter(pc.less(t, cut_s)), logs.filter(pc.greater_equal(t, cut_s))
    truth = _load_truth(storage)
    segment = truth.segment(dids) if truth is not None else None
    keywords = vcfg.keywords or _top_clicked(before, vcfg.num_keywords)
    as_of_cfg = cfg.model_copy(update={"as_of": cut, "score_table": None})
    score_table = score_table_for(storage, as_of_cfg)[0] if "din" in vcfg.strategies else None
    as_of_cfg = as_of_cfg.model_copy(update={"score_table": score_table})
    rows: list[dict[str, Any]] = []
    runs = [(k, s) for k in keywords for s in vcfg.seed_sizes]
    with get_console().progress("validation", total=len(runs), unit="run") as bar:
        for i, (kw, size) in enumerate(runs):
            bar.set(i, note=f"keyword {kw}, {size} seeds")
            if progress:
                progress(i / len(runs), f"keyword {kw}, {size} seeds")
            pre_clicks, _ = per_user_counts(before, dids, kw)
            clickers = np.flatnonzero(pre_clicks > 0)
            if clickers.size < max(size, vcfg.min_seeds) and not (
                size == min(vcfg.seed_sizes) and clickers.size >= vcfg.min_seeds
            ):
                continue
            draws = [rng.choice(clickers, min(size, clickers.size), replace=False) for _ in range(vcfg.repeats)]
            rows.extend(_validate_keyword(storage, as_of_cfg, kw, draws, dids, x, names, popularity, after,
                                          segment, truth, rng, int(clickers.size)))
    report = {"cutting_date": cut.isoformat(), "keywords": keywords, "score_table": score_table,
              "scorer": _scorer_of(storage, cfg, score_table),
              "eligible": cfg.eligible, "users": int(dids.size), "eligible_users": int(dids.size),
              "excluded_users": int(all_users - dids.size), "default_strategy": cfg.strategy,
              "rows": rows, "verdicts": verdicts(rows, cfg.strategy)}
    out = vcfg.report_dir.strip("/")
    storage.write_json(f"{out}/validation.json", report)
    storage.write_text(f"{out}/validation.md", markdown_report(report))
    report["files"] = [f"{out}/validation.json", f"{out}/validation.md"]
    return report


def _scorer_of(storage: Storage, cfg: ExtendConfig, score_table: str | None) -> str | None:
    """Which model made the score table the din strategy used (the gate may pick the regression)."""
    if score_table is None:
        return None
    from app.registry import Registry

    reg = Registry(storage).read()
    model_version = reg.get("score_tables", {}).get("versions", {}).get(score_table, {}).get("model_version")
    info = reg.get("models", {}).get(cfg.scores.model_name, {}).get("versions", {}).get(model_version, {})
    return info.get("scorer") or ("din" if info else None)


def _top_clicked(before: pa.Table, n: int) -> list[str]:
    clicks = before.filter(pc.equal(before.column(C.IS_CLICK), 1))
    counts = pc.value_counts(clicks.column(C.KEYWORD)).to_pylist()
    counts.sort(key=lambda d: (-d["counts"], str(d["values"])))
    return [str(d["values"]) for d in counts[:n]]


@dataclass
class _Draw:
    """One seed set of a keyword and every ranked list made for it (indices into the pool)."""

    seeds: np.ndarray
    non_seed: np.ndarray
    ranked: dict[str, np.ndarray]
    target: int | None


def _rank_for_draw(storage, cfg, kw, r, seed_idx, dids, x, names, popularity, segment, truth, pos,
                   extra) -> _Draw:
    vcfg = cfg.validation
    n = seed_idx.size
    is_seed = np.zeros(dids.size, dtype=bool)
    is_seed[seed_idx] = True
    non_seed = np.flatnonzero(~is_seed)
    ranked: dict[str, np.ndarray] = {"popularity": non_seed[np.lexsort((non_seed, -popularity[non_seed]))]}
    target = None
    if segment is not None:
        segs = segment[seed_idx]
        target = int(np.bincount(segs[segs >= 0]).argmax()) if (segs >= 0).any() else -1
        post = segment_posterior(truth, x, names, target)
        ranked["oracle"] = non_seed[np.lexsort((non_seed, -post[non_seed]))]
    for strategy in vcfg.strategies:
        run_cfg = cfg.model_copy(update={"strategy": strategy, "size": max(vcfg.extension_factors) * n,
                                         "percentage": None})
        try:
            rep = extend_audience(storage, list(dids[seed_idx]), run_cfg,
                                  f"{vcfg.report_dir}/runs/{_safe(kw)}-{n}-{strategy}-{r}")
        except SeedError as exc:  # e.g. jsd: no divergent feature; recorded, not fatal
            extra.setdefault(strategy, {}).setdefault("refused", []).append(" ".join(str(exc).split()))
            continue
        table = pq.read_table(io.BytesIO(storage.read_bytes(f"{rep['out_dir']}/audience.parquet")))
        got = table.column("did").to_pylist()
        outside = [d for d in got if d not in pos]
        if outside:  # the as-of score table and the eligible pool are the same users by construction
            raise SeedError(f"{strategy} picked {len(outside)} users outside the eligible pool, e.g. {outside[:3]}")
        ranked[strategy] = np.fromiter((pos[d] for d in got), np.int64)
        info = extra.setdefault(strategy, {})
        info.setdefault("clusters", []).append(rep.get("clusters", {}).get("k"))
        info.setdefault("warnings", []).extend(rep.get("warnings") or [])
        info.setdefault("similarity_spread", []).append(rep.get("similarity_spread"))
    return _Draw(seed_idx, non_seed, ranked, target)


def _validate_keyword(storage, cfg, kw, draws_idx, dids, x, names, popularity, after, segment, truth, rng,
                      clickers: int) -> list[dict[str, Any]]:
    """Every set of every draw of one (keyword, seed size), one row per extension factor.

    The random baseline is the whole eligible non-seed pool of each draw: its clicks per user are
    what a random same-size audience gets in expectation, without the noise of one random draw.
    """
    vcfg = cfg.validation
    clicks, shows = per_user_counts(after, dids, kw)
    pos = {d: i for i, d in enumerate(dids)}
    extra: dict[str, Any] = {}
    draws = [_rank_for_draw(storage, cfg, kw, r, idx, dids, x, names, popularity, segment, truth, pos, extra)
             for r, idx in enumerate(draws_idx)]
    n = int(draws[0].seeds.size)
    names_ranked = [k for k in ("popularity", "oracle", *vcfg.strategies) if all(k in d.ranked for d in draws)]
    targets = [d.target for d in draws]
    rows = []
    for factor in vcfg.extension_factors:
        m = factor * n
        base_parts = [d.non_seed for d in draws]
        sets = {"random": _set_metrics("random", base_parts, clicks, shows, segment, targets)}
        sets["random"]["expected_over_pool"] = True
        chosen = {name: [d.ranked[name][:m] for d in draws] for name in names_ranked}
        for name, parts in chosen.items():
            met = _set_metrics(name, parts, clicks, shows, segment, targets)
            lift, lo, hi = pooled_ratio_ci([clicks[p] for p in parts], [clicks[b] for b in base_parts],
                                           vcfg.bootstrap, rng)
            met.update({"lift": lift, "lift_ci95": [lo, hi]})
            if name not in ("popularity", "oracle"):
                met["vs_popularity"] = list(pooled_ratio_ci([clicks[p] for p in parts],
                                                            [clicks[p] for p in chosen["popularity"]],
                                                            vcfg.bootstrap, rng))
            if "precision" in met and "oracle" in chosen:
                oracle = _set_metrics("oracle", chosen["oracle"], clicks, shows, segment, targets)["precision"]
                met["precision_vs_oracle"] = met["precision"] / oracle if oracle else None
            sets[name] = met
        rows.append({"keyword": kw, "seeds": n, "draws": len(draws), "factor": int(factor), "audience_size": int(m),
                     "eligible_clickers": clickers, "target_segment": targets[0], "sets": sets, "runs": extra})
    return rows


def verdicts(rows: list[dict[str, Any]], default: str) -> list[str]:
    """Plain-words verdict per (keyword, seeds, factor): does the default strategy beat random
    (95% CI of its lift above 1) and popularity (a higher lift)? If not, which set does."""
    out = []
    for r in rows:
        head = f"{r['keyword']} ({r['seeds']} seeds, {r['factor']}x)"
        sets = r["sets"]
        cand = {n: m for n, m in sets.items() if n not in ("random", "oracle") and "lift" in m}
        best = max(cand, key=lambda n: (cand[n]["lift_ci95"][0], cand[n]["lift"])) if cand else None
        if default not in sets:
            refused = (r.get("runs", {}).get(default, {}).get("refused") or ["no audience"])[0]
            out.append(f"{head}: {default} gave no audience ({refused}); best: {_lift_words(best, cand)}")
            continue
        m = sets[default]
        beats_random = m["lift_ci95"][0] > 1.0
        beats_pop = m["lift"] > sets["popularity"]["lift"]
        if beats_random and beats_pop:
            out.append(f"{head}: {default} beats random ({_lift_words(default, cand)}) and popularity "
                       f"({sets['popularity']['lift']:.2f})")
            continue
        misses = [w for w, ok in (("random (its CI reaches 1 or below)", beats_random),
                                  (f"popularity ({sets['popularity']['lift']:.2f})", beats_pop)) if not ok]
        better = f"; use {best}: {_lift_words(best, cand)}" if best and best != default else ""
        out.append(f"{head}: {default} does NOT beat " + " nor ".join(misses)
                   + f" ({_lift_words(default, cand)}){better}")
    return out


def _lift_words(name: str | None, sets: dict[str, Any]) -> str:
    if name is None:
        return "none"
    m = sets[name]
    lo, hi = m["lift_ci95"]
    return f"{name} lift {m['lift']:.2f} [{lo:.2f}, {hi:.2f}]"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def markdown_report(report: dict[str, Any]) -> str:
    """validation.md: the setting, the verdicts in plain words, then every figure."""
    head = (f"# Audience validation as of {report['cutting_date']}\n\n"
            f"Eligible pool: {report['eligible_users']} users ({report['eligible']}); "
            f"{report['excluded_users']} train-ready users had no impression before the cut and were "
            f"left out. Default strategy: {report['default_strategy']}"
            + (f" (score table by the {report['scorer']} scorer)" if report.get("scorer") else "") + ".\n\n")
    said = "\n".join(f"- {v}" for v in report["verdicts"]) or "- no keyword had enough eligible clickers"
    return head + "## Verdicts\n\n" + said + "\n\n## Every figure\n\n" + markdown_table(report["rows"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| keyword | seeds | factor | set | clicks/user | CTR | lift vs random [95% CI] | precision "
            "| precision / oracle |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        for name, m in r["sets"].items():
            ci = m.get("lift_ci95")
            lift = f"{m['lift']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "1 (baseline)"
            lines.append(
                f"| {r['keyword']} | {r['seeds']} | {r['factor']}x | {name} | {m['clicks_per_user']:.4f} | "
                f"{_fmt(m['ctr'], 4)} | {lift} | {_fmt(m.get('precision'))} | {_fmt(m.get('precision_vs_oracle'))} |"
            )
    return head + "\n".join(lines) + "\n"


def summary_table(rows: list[dict[str, Any]]) -> str:
    """One line per (keyword, seeds, factor): each set's lift over random with its 95% CI, side by
    side (the console's view; ``markdown_table`` has every figure)."""
    names = [n for n in ("din", "jsd", "popularity", "oracle") if any(n in r["sets"] for r in rows)]
    head = "| keyword | seeds | x | " + " | ".join(f"{n} lift [95% CI]" for n in names) + " | random clicks/user |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for r in rows:
        cells = []
        for n in names:
            m = r["sets"].get(n)
            ci = (m or {}).get("lift_ci95")
            cells.append(f"{m['lift']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-")
        base = r["sets"]["random"]["clicks_per_user"]
        lines.append(f"| {r['keyword']} | {r['seeds']} | {r['factor']} | " + " | ".join(cells) + f" | {base:.4f} |")
    return "\n".join(lines) + "\n"

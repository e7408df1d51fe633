"""Estimated visual scores (the paper's rules applied to each PVS mask, see
:mod:`mcpvs_bidsapp.visual_scores`) and, where participants.tsv has rated scores, their
agreement: weighted Cohen's kappa (linear and quadratic weights, scikit-learn), exact and
within-one agreement, overall and per vendor, and the table of rated against estimated."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mcpvs_bidsapp.group.analyses import REGION_KEYS, Context, pyplot

KEY = "visual"
LEVELS = (1, 2, 3, 4)
BOOTSTRAP = 1000


def _kappa(rated: np.ndarray, est: np.ndarray, weights: str) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(rated) < 2 or (len(set(rated)) < 2 and len(set(est)) < 2):
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(cohen_kappa_score(rated, est, labels=list(LEVELS), weights=weights))


def kappa_fast(rated: np.ndarray, est: np.ndarray, weights: str) -> float:
    """Weighted kappa from the 4 x 4 confusion matrix (the formula scikit-learn uses; the
    bootstrap calls it a thousand times, and tests check it against scikit-learn)."""
    k = len(LEVELS)
    matrix = np.bincount((rated - 1) * k + (est - 1), minlength=k * k).reshape(k, k)
    n = matrix.sum()
    if n == 0:
        return float("nan")
    expected = np.outer(matrix.sum(1), matrix.sum(0)) / n
    grid = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    w = grid if weights == "linear" else grid**2
    denom = (w * expected).sum()
    return float(1 - (w * matrix).sum() / denom) if denom else float("nan")


def agreement(rated, est, seed: int = 0) -> dict:
    """Agreement of two 1-4 ratings of the same participants (complete pairs only)."""
    rated = pd.to_numeric(pd.Series(rated), errors="coerce").to_numpy(float)
    est = pd.to_numeric(pd.Series(est), errors="coerce").to_numpy(float)
    keep = np.isfinite(rated) & np.isfinite(est)
    rated, est = rated[keep].astype(int), est[keep].astype(int)
    inside = np.isin(rated, LEVELS) & np.isin(est, LEVELS)  # a score outside 1-4 is no score
    rated, est = rated[inside], est[inside]
    n = len(rated)
    out = {
        "n": n,
        "kappa_linear": _kappa(rated, est, "linear"),
        "kappa_quadratic": _kappa(rated, est, "quadratic"),
        "kappa_quadratic_ci_low": float("nan"),
        "kappa_quadratic_ci_high": float("nan"),
        "exact_pct": 100.0 * float(np.mean(rated == est)) if n else float("nan"),
        "within_one_pct": 100.0 * float(np.mean(abs(rated - est) <= 1)) if n else float("nan"),
        "mean_difference": float(np.mean(est - rated)) if n else float("nan"),
    }
    if n >= 10:  # percentile bootstrap of the quadratic kappa (fixed seed: reproducible)
        rng = np.random.default_rng(seed)
        draws = [
            kappa_fast(rated[i], est[i], "quadratic") for i in rng.integers(0, n, (BOOTSTRAP, n))
        ]
        draws = np.asarray(draws)[np.isfinite(draws)]
        if draws.size:
            lo, hi = np.percentile(draws, [2.5, 97.5])
            out["kappa_quadratic_ci_low"], out["kappa_quadratic_ci_high"] = float(lo), float(hi)
    return out


def run(ctx: Context) -> dict | None:
    from mcpvs_bidsapp.group.analyses.visual import rated_pairs

    cross = ctx.cross
    est_columns = {
        region: f"{key}_est_visual_score"
        for region, key in REGION_KEYS.items()
        if f"{key}_est_visual_score" in cross
    }
    if not est_columns:
        ctx.note(
            KEY,
            "no estimated visual scores in the measures (outputs of an mcpvs older than "
            "the est_visual_score column)",
        )
        return None
    counts = pd.DataFrame(
        {
            region: pd.to_numeric(cross[col], errors="coerce").value_counts().reindex(LEVELS)
            for region, col in est_columns.items()
        }
    ).fillna(0).astype(int)  # fmt: skip
    counts.index.name = "estimated score"
    result: dict = {"estimated_counts": counts.reset_index()}
    pairs = [
        (r, c) for r, c in (rated_pairs(ctx) if ctx.settings.group.visual_score_columns else [])
    ]
    pairs = [(r, c) for r, c in pairs if r in est_columns]
    if not pairs:
        if ctx.settings.group.visual_score_columns:
            ctx.note(KEY, "no rated score column for BG or WM: no agreement computed")
        return result
    rows, figures = [], []
    vendors = ["all"] + (ctx.vendors if len(ctx.vendors) > 1 else [])
    for region, column in pairs:
        for vendor in vendors:
            sub = cross if vendor == "all" else cross[cross["vendor"] == vendor]
            rows.append(
                {"region": region, "score_column": column, "vendor": vendor}
                | agreement(sub[column], sub[est_columns[region]])
            )
        figures.append(_figure(ctx, cross, region, column, est_columns[region]))
    table = pd.DataFrame(rows)
    ctx.write(table, "group_stats_visual_agreement")
    result.update({"agreement": table, "agreement_figures": figures})
    return result


def _figure(ctx: Context, cross, region: str, column: str, est_column: str) -> str:
    plt = pyplot()
    rated = pd.to_numeric(cross[column], errors="coerce")
    est = pd.to_numeric(cross[est_column], errors="coerce")
    both = rated.notna() & est.notna()
    matrix = pd.crosstab(rated[both].astype(int), est[both].astype(int)).reindex(
        index=LEVELS, columns=LEVELS, fill_value=0
    )
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(matrix.to_numpy(), cmap="Blues", vmin=0)
    peak = max(int(matrix.to_numpy().max()), 1)
    for i, r in enumerate(LEVELS):
        for j, e in enumerate(LEVELS):
            value = int(matrix.loc[r, e])
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > peak / 2 else "black")  # fmt: skip
    ax.set_xticks(range(4), [str(v) for v in LEVELS])
    ax.set_yticks(range(4), [str(v) for v in LEVELS])
    ax.set_xlabel("estimated from the PVS mask")
    ax.set_ylabel(f"rated ({column})")
    ax.set_title(f"{region} visual score", fontsize=10)
    name = f"visual_agreement_{REGION_KEYS[region]}_{column}"
    ctx.figure(fig, name)
    return name

"""Paper Fig. 6: which modules, retrained, buy robustness: per module, the accuracies of the module subsets that
retrain it against those that do not (`module_summary`, the one summary of Fig. 6, and the figure that draws it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ...grid.vocabulary import NUM_MODULES, as_mask, known_archs, module_names, num_modules, opposite
from .style import (
    COLUMN_WIDTH,
    FULL_WIDTH,
    METRICS,
    MIN_FONT,
    _accuracy_axis,
    _figure,
    _legend,
    _ordered,
    _plain,
    _pretraining_title,
    _styled,
    _suptitle,
    attack_text,
    run_text,
)

SUMMARY_COLUMNS = ("module", "membership", "metric", "median", "q25", "q75", "n", "ci_lo", "ci_hi")


def median_interval(values) -> tuple[float, float]:
    """Distribution-free 95% interval of the median of the population the `values` are drawn from: order
    statistics x_(l) and x_(n+1-l), with l the largest rank such that P(Binomial(n, 1/2) < l) <= 2.5% (coverage
    at least 95% for n >= 6); with fewer values the range, whose coverage is 1 - 2^(1-n) (94% for 5 values). No
    values: (nan, nan)."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, float))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    ranks = [rank for rank in range(1, n // 2 + 1) if binom.cdf(rank - 1, n, 0.5) <= 0.025]
    rank = ranks[-1] if ranks else 1
    return float(x[rank - 1]), float(x[n - rank])


def module_count(table: pd.DataFrame) -> int:
    """N, the modules of the table's arch: the vocabulary's N of its `arch` (6 for the paper's archs), else the
    length of its `subset` masks, else 6."""
    if "arch" in table:
        known = {num_modules(a) for a in set(table["arch"].dropna()) if a in known_archs()}
        if len(known) == 1:
            return known.pop()
    sizes = {len(v) for v in table["subset"] if isinstance(v, str)} if "subset" in table else set()
    return max(sizes) if sizes else NUM_MODULES


def _masks(table: pd.DataFrame, n: int = NUM_MODULES) -> pd.Series:
    """Each row's module subset as a mask of `n` modules ('101000'): the `subset` column, else
    `retrained_modules`, in any form `grid.vocabulary.as_mask` reads."""
    for column in ("subset", "retrained_modules"):
        if column in table:
            return table[column].map(lambda v: as_mask(v, n))
    raise ValueError("module_summary needs a 'subset' (bitmask) or 'retrained_modules' column")


def _groups(table: pd.DataFrame, by: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(key, rows) per combination of the `by` columns; pretrainings in their usual order, other values as they
    come (one group, key (), without `by`)."""
    if not by:
        return [((), table)]
    orders = [_ordered(table[column]) for column in by]
    keys = sorted({tuple(row) for row in table[by].itertuples(index=False)},
                  key=lambda key: tuple(order.index(value) for order, value in zip(orders, key)))
    groups = []
    for key in keys:
        selected = np.ones(len(table), bool)
        for column, value in zip(by, key):
            selected &= (table[column] == value).to_numpy()
        groups.append((key, table[selected]))
    return groups


def module_summary(table: pd.DataFrame, by: Sequence[str] = ("pretraining",),
                   metrics: Sequence[str] = ("clean_acc", "robust_acc")) -> pd.DataFrame:
    """Paper Fig. 6: per `by` group (default: per pretraining) and module, the median and 25th / 75th
    percentiles of each metric over the module subsets that include vs exclude the module ('000000', the
    pretrained net, excludes every module), and the median's 95% interval (`median_interval`: ci_lo, ci_hi).
    Several seeds of one subset are averaged first, so `n` counts subsets.

    `table`: the `module_subsets` table (a `subset` bitmask column, or `retrained_modules`: 'm0,m2', a tuple,
    ...; `grid.vocabulary.as_mask`). Returns columns *by, module, membership ('included'/'excluded'), metric,
    median, q25, q75, n, ci_lo, ci_hi."""
    table, by = _plain(table), list(by)
    missing = [c for c in (*by, *metrics) if c not in table]
    if missing:
        raise ValueError(f"module_summary: missing column(s) {missing}")
    n_modules = module_count(table)
    work = table.assign(_mask=_masks(table, n_modules).to_numpy())
    per_subset = work.groupby([*by, "_mask"], sort=False)[list(metrics)].mean().reset_index()
    rows = []
    for key, group in _groups(per_subset, by):
        for i, module in enumerate(module_names(n_modules)):
            included = group["_mask"].str[i] == "1"
            for membership, selected in (("included", group[included]), ("excluded", group[~included])):
                for metric in metrics:
                    values = selected[metric].astype(float)
                    lo, hi = median_interval(values.dropna())
                    rows.append({**dict(zip(by, key)), "module": module, "membership": membership,
                                 "metric": metric, "median": values.median(), "q25": values.quantile(0.25),
                                 "q75": values.quantile(0.75), "n": int(values.count()), "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])


def subset_count_text(n: int, n_modules: int = NUM_MODULES) -> str:
    """'all 64 module subsets' / '5 of 64 module subsets' (2^N for N modules)."""
    total = 2**n_modules
    return f"all {total} module subsets" if n == total else f"{n} of {total} module subsets"


@_styled
def module_subsets_figure(table: pd.DataFrame, info: dict | None = None):
    """Paper Fig. 6: per module, the median (bar) of clean and robust accuracy over the retrained module subsets
    that include (filled) or exclude (hatched) it, with the median's 95% interval (error bar, `median_interval`:
    an interval like every other figure's, not a spread); faint dots: the individual subsets (mean over seeds);
    "none run" where no subset of the run includes (or excludes) the module. One panel per pretraining; the
    titles say how many subsets ran."""
    table, info = _plain(table), info or {}
    summary = module_summary(table)
    names = module_names(module_count(table))  # the x axis: the arch's own modules
    work = table.assign(_mask=_masks(table, len(names)).to_numpy())
    pretrainings = _ordered(summary["pretraining"])
    width = COLUMN_WIDTH if len(pretrainings) == 1 else FULL_WIDTH
    fig, axes = _figure(width, 2.9, 1, len(pretrainings), sharey=True)
    bars = [(metric, membership) for metric in METRICS for membership in ("included", "excluded")]
    bar_w = 0.19
    rng = np.random.default_rng(0)
    counts = {}
    for ax, pretraining in zip(axes.flat, pretrainings):
        sub = summary[summary["pretraining"] == pretraining]
        points = work[work["pretraining"] == pretraining].groupby("_mask")[list(METRICS)].mean().reset_index()
        counts[pretraining] = len(points)
        x = np.arange(len(names))
        for i, (metric, membership) in enumerate(bars):
            part = sub[(sub["metric"] == metric) & (sub["membership"] == membership)].set_index("module")
            part = part.reindex(list(names))
            _, color, _, _ = METRICS[metric]
            excluded = membership == "excluded"
            pos = x + (i - 1.5) * bar_w
            ax.bar(pos, part["median"], bar_w * 0.92, color="white" if excluded else color, edgecolor=color,
                   hatch="/////" if excluded else None, lw=0.7, zorder=2)
            ax.errorbar(pos, part["median"], yerr=[(part["median"] - part["ci_lo"]).clip(lower=0),
                                                      (part["ci_hi"] - part["median"]).clip(lower=0)],
                        fmt="none", ecolor="0.15", elinewidth=0.7, capsize=1.5, capthick=0.7, zorder=4)
            for j in np.flatnonzero(part["n"].fillna(0).to_numpy() == 0):
                ax.text(pos[j], 0.02, "none run", rotation=90, ha="center", va="bottom", fontsize=MIN_FONT,
                        color="0.45", zorder=4)
            for j in range(len(names)):
                inside = points["_mask"].str[j] == "1"
                vals = points.loc[inside if not excluded else ~inside, metric].astype(float).to_numpy()
                jitter = rng.uniform(-0.28, 0.28, len(vals)) * bar_w
                ax.scatter(pos[j] + jitter, vals, s=2.5, color="0.25", alpha=0.35, lw=0, zorder=3)
        ax.set_xticks(x, list(names))
        ax.set_xlabel("module")
        ax.set_title(f"{_pretraining_title(pretraining, opposite(pretraining))}\n"
                     f"({counts[pretraining]} subsets incl. the pretrained net)")
        _accuracy_axis(ax, "median accuracy over subsets" if ax is axes.flat[0] else None)
    attack = attack_text(info.get("attack"), table)
    robust = f"robust ({attack.split(',')[0]})"
    blue, vermillion = METRICS["clean_acc"][1], METRICS["robust_acc"][1]
    handles = [Patch(facecolor=blue, edgecolor=blue, label="clean, module retrained"),
               Patch(facecolor="white", edgecolor=blue, hatch="/////", label="clean, not retrained"),
               Patch(facecolor=vermillion, edgecolor=vermillion, label=f"{robust}, module retrained"),
               Patch(facecolor="white", edgecolor=vermillion, hatch="/////", label=f"{robust}, not retrained"),
               Line2D([], [], color="0.15", marker="|", ms=5, ls="none", label="95% interval of the median"),
               Line2D([], [], color="0.25", alpha=0.6, marker="o", ms=2, ls="none",
                      label="one subset (mean over seeds)")]
    _legend(fig, handles, ncol=2 if width == COLUMN_WIDTH else 3)
    n = max(counts.values()) if counts else 0
    _suptitle(fig, f"Module subsets: {subset_count_text(n, len(names))} retrained; {run_text(info, table)}")
    return fig

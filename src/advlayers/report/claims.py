"""The claims check: every claim of the paper tested from a run's tables (`report.claim_rules`: statistics,
thresholds and the verdict rule; `report.claim_checks`: one checker per figure), as claims.parquet, claims.md
and the report's HTML."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from ..io import read_table
from .claim_checks import (
    Outcomes,
    _cutoff_claims,
    _feature_claims,
    _layer_claims,
    _reinit_claims,
    _subset_claims,
)
from .claim_rules import BY_ID, CLAIMS, COLUMNS, VERDICTS, _row
from .claim_rules import __doc__ as RULES_DOC

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- all claims


def check_claims(tables: dict) -> pd.DataFrame:
    """Every claim per (dataset, arch) the tables can test. `tables`: {name: DataFrame or parquet path} with
    cutoff and outcomes (required) and layer_cutoff, module_subsets, reinit, feature_divergence (optional)."""
    frames = {k: (v if isinstance(v, pd.DataFrame) else read_table(v)) for k, v in tables.items()}
    cutoff, all_outcomes = frames["cutoff"], frames["outcomes"]
    rows = []
    for (dataset, arch), coords in cutoff.groupby(["dataset", "arch"], sort=False):
        attack = coords["attack"].dropna().iloc[0]
        part = all_outcomes[(all_outcomes["dataset"] == dataset) & (all_outcomes["arch"] == arch) &
                            (all_outcomes["attack"] == attack)]
        outcomes = Outcomes(part)
        labels = (dataset, arch, "", attack)
        rows += _cutoff_claims(cutoff, outcomes, labels)
        layer, subsets = frames.get("layer_cutoff"), frames.get("module_subsets")
        if layer is not None and not ((layer["dataset"] == dataset) & (layer["arch"] == arch)).any():
            layer = None
        if subsets is not None and not ((subsets["dataset"] == dataset) & (subsets["arch"] == arch)).any():
            subsets = None
        if layer is not None or subsets is not None:
            rows += _layer_claims(layer, outcomes, labels)
            rows += _subset_claims(subsets, outcomes, labels)
    if "layer_cutoff" not in frames:
        rows += [_row(BY_ID[c], status="not run", note="no layer_cutoff analysis in the config") for c in ("C5a", "C5b")]
    if "module_subsets" not in frames:
        rows += [_row(BY_ID[c], status="not run", note="no module_subsets analysis in the config") for c in ("C6a", "C6b")]
    rows += _reinit_claims(frames.get("reinit"))
    rows += _feature_claims(frames.get("feature_divergence"))
    order = {c.id: i for i, c in enumerate(CLAIMS)}
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table = table.sort_values(["claim", "dataset", "arch", "variant"], key=lambda s: s.map(order) if s.name == "claim" else s)
    return table.reset_index(drop=True)


CUTOFF_CLAIMS = tuple(c.id for c in CLAIMS if c.figure.startswith("Fig. 2-4"))


def check_cutoff_claims(cutoff, outcomes) -> pd.DataFrame:
    """The cut-off figure's claims (C0-C4) alone, from its table and its nets' per-sample outcomes (what
    `snakemake fig2` reports without training the analyses' nets)."""
    table = check_claims({"cutoff": cutoff, "outcomes": outcomes})
    return table[table["claim"].isin(CUTOFF_CLAIMS)].reset_index(drop=True)


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def to_markdown(table: pd.DataFrame, details: bool = True) -> str:
    """results/claims.md: the verdict table, then (details) each claim's statistic and the rules."""
    lines = ["# Does this run reproduce the paper?", "",
             "| claim | figure | dataset | arch | variant | statistic | value | 95% interval | threshold | verdict |",
             "|---|---|---|---|---|---|---:|---|---|---|"]
    for r in table.itertuples():
        interval = f"[{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}]" if r.verdict != "not run" else ""
        lines.append(f"| {r.claim} | {r.figure} | {r.dataset} | {r.arch} | {r.variant} | {r.statistic} | "
                     f"{_fmt(r.value)} | {interval} | {r.side} {r.threshold:g} | **{r.verdict}** |")
    counts = table["verdict"].value_counts()
    lines += ["", "Verdicts: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)]
    if details:
        lines += ["", "## What each claim tests", ""]
        lines += [f"* **{c.id}** ({c.figure}): {c.text}. Statistic: `{c.statistic}`; holds when {c.side} {c.threshold:g}."
                  for c in CLAIMS if c.id in set(table["claim"])]
        lines += ["", "## Rules", "", RULES_DOC.split("Claims (paper")[0].strip(), ""]
        notes = [f"* {r.claim} {r.dataset}/{r.arch} {r.variant}: {r.note}" for r in table.itertuples() if r.note]
        if notes:
            lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines) + "\n"


VERDICT_COLOURS = {"holds": "#cfe8cf", "fails": "#f4c7c3", "inconclusive": "#fce8b2", "not run": "#e8e8e8"}


def to_html(table: pd.DataFrame) -> str:
    """The claims table as a self-contained HTML page (the report shows it inline)."""
    import html

    shown = table.assign(interval=[f"[{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}]" if r.verdict != "not run" else ""
                                   for r in table.itertuples()],
                         value=table["value"].map(_fmt), threshold=[f"{r.side} {r.threshold:g}" for r in table.itertuples()])
    columns = ["claim", "figure", "dataset", "arch", "variant", "claim_text", "statistic", "value", "interval",
               "threshold", "verdict", "note"]
    rows = []
    for r in shown[columns].itertuples(index=False):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in r[:-2])
        colour = VERDICT_COLOURS.get(r.verdict, "#fff")
        rows.append(f"<tr>{cells}<td style='background:{colour}'><b>{html.escape(r.verdict)}</b></td>"
                    f"<td>{html.escape(str(r.note))}</td></tr>")
    header = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
    rules = html.escape(RULES_DOC.split("Claims (paper")[0].strip()).replace("\n\n", "</p><p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>claims</title><style>"
            "body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
            "padding:3px 6px;vertical-align:top}</style></head><body><h2>Does this run reproduce the paper?</h2>"
            f"<table><tr>{header}</tr>{''.join(rows)}</table><h3>Rules</h3><p>{rules}</p></body></html>\n")


def run(*, tables: list, markdown: str, table_out: str | None = None, html: str | None = None,
        outcomes: list | None = None) -> pd.DataFrame:
    """The claims job. With `outcomes` (rule `cutoff_claims`): one cut-off figure's claims from its table
    (`tables` = [that table]) and its nets' outcome files; else every claim from the run's tables, also written
    as `table_out` (with the digests of its inputs) and `html`."""
    from ..io import atomic_write, file_digests, write_parquet
    from .tables import outcomes_table

    if outcomes is not None:
        result = check_cutoff_claims(tables[0], outcomes_table(outcomes))
    else:
        inputs = {Path(p).stem: p for p in tables}
        result = check_claims(inputs)
        write_parquet(table_out, result, metadata={"inputs": file_digests(inputs)})
        atomic_write(html, to_html(result))
    atomic_write(markdown, to_markdown(result))
    for row in result.itertuples():
        log.info("%s %s %s/%s: %s", row.claim, row.verdict, row.dataset, row.arch, row.statistic)
    return result

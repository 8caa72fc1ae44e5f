"""The claims check: every claim of the paper tested from a run's tables, as claims.parquet, claims.md and the
report's HTML, by the rules of config `claims.rules`:

* v2 (default): registered in docs/claims-v2.md before any v2 result, written after the tuning-image (v1)
  results had been seen (`report.claim_rules_v2`; checkers `report.claim_checks_v2`,
  `report.claim_checks_v2_analyses`; verdicts, controls, Holm: `report.claim_verdicts`);
* v1: the rules of dd0f8f3, committed after some demo results had been seen and kept unchanged for
  comparison (`report.claim_rules`, `report.claim_checks`).
"""

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
from . import claim_checks_v2 as v2
from . import claim_rules_v2 as rules_v2
from . import claim_verdicts as verdicts
from .claim_checks_v2_analyses import feature_rows, image_part, reinit_rows
from .claim_rules import BY_ID, CLAIMS, COLUMNS, VERDICTS, _row
from .claim_rules import __doc__ as RULES_DOC
from .claim_rules_v2 import CONTROLS, RULES

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- all claims


def check_claims(tables: dict, rules: str = "v2") -> pd.DataFrame:
    """Every claim per (dataset, arch) the tables can test, by the rules `rules` (v2, the default: docs/claims-v2.md;
    v1: the rules of dd0f8f3, kept unchanged for comparison). `tables`: {name: DataFrame or parquet path} with
    cutoff and outcomes (required) and layer_cutoff, module_subsets, reinit, feature_divergence (optional).
    Outcomes that mix image parts (tuning, confirmation) are refused before any compute."""
    if rules not in RULES:
        raise ValueError(f"claims rules {rules!r}: choose one of {', '.join(RULES)}")
    frames = {k: (v if isinstance(v, pd.DataFrame) else read_table(v)) for k, v in tables.items()}
    parts = {name: image_part(frames[name]) for name in ("outcomes", "reinit", "feature_divergence") if name in frames}
    table = _check_v1(frames) if rules == "v1" else _check_v2(frames)
    order = {c.id: i for i, c in enumerate([*CLAIMS, *CONTROLS.values()])}
    table = table.sort_values(["claim", "dataset", "arch", "variant"], key=lambda s: s.map(order) if s.name == "claim" else s)
    log.info("claims rules %s, image parts %s", rules, parts)
    return table.reset_index(drop=True)


def _settings(frames: dict):
    """(dataset, arch, attack labels, that setting's outcomes) of every (dataset, arch) of the cut-off table."""
    cutoff, all_outcomes = frames["cutoff"], frames["outcomes"]
    for (dataset, arch), coords in cutoff.groupby(["dataset", "arch"], sort=False):
        attack = coords["attack"].dropna().iloc[0]
        part = all_outcomes[(all_outcomes["dataset"] == dataset) & (all_outcomes["arch"] == arch) &
                            (all_outcomes["attack"] == attack)]
        layer, subsets = frames.get("layer_cutoff"), frames.get("module_subsets")
        if layer is not None and not ((layer["dataset"] == dataset) & (layer["arch"] == arch)).any():
            layer = None
        if subsets is not None and not ((subsets["dataset"] == dataset) & (subsets["arch"] == arch)).any():
            subsets = None
        yield (dataset, arch, "", attack), part, layer, subsets


def _check_v1(frames: dict) -> pd.DataFrame:
    rows = []
    for labels, part, layer, subsets in _settings(frames):
        outcomes = Outcomes(part)
        rows += _cutoff_claims(frames["cutoff"], outcomes, labels)
        if layer is not None or subsets is not None:
            rows += _layer_claims(layer, outcomes, labels)
            rows += _subset_claims(subsets, outcomes, labels)
    if "layer_cutoff" not in frames:
        rows += [_row(BY_ID[c], status="not run", note="no layer_cutoff analysis in the config") for c in ("C5a", "C5b")]
    if "module_subsets" not in frames:
        rows += [_row(BY_ID[c], status="not run", note="no module_subsets analysis in the config") for c in ("C6a", "C6b")]
    rows += _reinit_claims(frames.get("reinit"))
    rows += _feature_claims(frames.get("feature_divergence"))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _check_v2(frames: dict) -> pd.DataFrame:
    rows = []
    for labels, part, layer, subsets in _settings(frames):
        s = v2.Setting(Outcomes(part), labels, image_part(part))
        rows += v2.control_rows(s) + v2.cutoff_rows(frames["cutoff"], s)
        if layer is not None or subsets is not None:
            rows += v2.layer_rows(layer, s) + v2.subset_rows(subsets, s)
    for name, claims in (("layer_cutoff", ("C5a", "C5b")), ("module_subsets", ("C6a", "C6b"))):
        if name not in frames:
            rows += [rules_v2.row(rules_v2.BY_ID[c], status="not run", note=f"no {name} analysis in the config")
                     for c in claims]
    rows += reinit_rows(frames.get("reinit")) + feature_rows(frames.get("feature_divergence"))
    table = pd.DataFrame(rows, columns=list(rules_v2.COLUMNS))
    return verdicts.holm(verdicts.confound(verdicts.precondition(table)))


CUTOFF_CLAIMS = (*(c.id for c in CLAIMS if c.figure.startswith("Fig. 2-4")), *CONTROLS)


def check_cutoff_claims(cutoff, outcomes, rules: str = "v2") -> pd.DataFrame:
    """The cut-off figure's claims (C0-C4, and with v2 the retraining controls) alone, from its table and its
    nets' per-sample outcomes (what `snakemake fig2` reports without training the analyses' nets)."""
    table = check_claims({"cutoff": cutoff, "outcomes": outcomes}, rules=rules)
    return table[table["claim"].isin(CUTOFF_CLAIMS)].reset_index(drop=True)


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _interval(r) -> str:
    return f"[{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}]" if r.verdict not in ("not run", "not testable") else ""


def _threshold(r) -> str:
    return f"{r.side} {r.threshold:g}" + (" (point estimate)" if r.claim in CONTROLS else "")


def _rules_text(table: pd.DataFrame) -> str:
    if "rules_version" not in table:
        return RULES_DOC.split("Claims (paper")[0].strip()
    return (rules_v2.__doc__.strip() + "\n\n" + rules_v2.RULES_TEXT + "\n\nThe registration of these rules, "
            "committed before any v2 result: docs/claims-v2.md.")


def to_markdown(table: pd.DataFrame, details: bool = True) -> str:
    """results/claims.md: the verdict table with its summary line, then (details) each claim's statistic, the
    rules and the notes. A v2 table shows its record columns (control, unadjusted verdict, p, family-wise,
    image part, seeds)."""
    v2_table = "rules_version" in table
    extra = ["control", "unadjusted", "p", "family-wise", "images", "seeds"] if v2_table else []
    head = ["claim", "figure", "dataset", "arch", "variant", "statistic", "value", "95% interval", "threshold",
            "verdict", *extra]
    lines = ["# Does this run reproduce the paper?", "",
             f"Claims rules {table['rules_version'].iloc[0] if v2_table and len(table) else 'v1'}.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in ("value", "p") else "---" for h in head) + "|"]
    for r in table.itertuples():
        cells = [r.claim, r.figure, r.dataset, r.arch, r.variant, r.statistic, _fmt(r.value), _interval(r),
                 _threshold(r), f"**{r.verdict}**"]
        if v2_table:
            control = f"{r.control} {_fmt(r.control_value)}".strip()
            cells += [control, r.verdict_unadjusted, _fmt(r.p_value), "yes" if r.holds_familywise else "no",
                      f"{r.image_part} ({r.n_images})", r.seeds]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if v2_table:
        lines += ["", "Verdicts: " + verdicts.summary(table)]
    else:
        counts = table["verdict"].value_counts()
        lines += ["", "Verdicts: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)]
    if details:
        claims = rules_v2.CLAIMS if v2_table else CLAIMS
        lines += ["", "## What each claim tests", ""]
        lines += [f"* **{c.id}** ({c.figure}): {c.text}. Statistic: `{c.statistic}`; holds when {c.side} {c.threshold:g}."
                  for c in [*claims, *(CONTROLS.values() if v2_table else ())] if c.id in set(table["claim"])]
        lines += ["", "## Rules", "", _rules_text(table), ""]
        if v2_table:
            lines += ["## Registration", "", *[f"* {c.id}: {rules_v2.REGISTRATION.get(c.id, rules_v2.REGISTERED_V2)}"
                                               for c in (*claims, *CONTROLS.values()) if c.id in set(table["claim"])], ""]
        notes = [f"* {r.claim} {r.dataset}/{r.arch} {r.variant}: {r.note}" for r in table.itertuples() if r.note]
        if notes:
            lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines) + "\n"


def to_html(table: pd.DataFrame) -> str:
    """The claims page of the report (`report.landing`): verdict summary, claims table linked to the figures and
    tables, the rules."""
    from .landing import claims_html

    summary = verdicts.summary(table) if "rules_version" in table else None
    return claims_html(table, VERDICTS, _rules_text(table), summary=summary)


def run(*, tables: list, markdown: str, table_out: str | None = None, html: str | None = None,
        outcomes: list | None = None, rules: str = "v2") -> pd.DataFrame:
    """The claims job, by the rules `rules` (config `claims.rules`). With `outcomes` (rule `cutoff_claims`): one
    cut-off figure's claims from its table (`tables` = [that table]) and its nets' outcome files; else every
    claim from the run's tables, also written as `table_out` (with the digests of its inputs) and `html`."""
    from ..io import atomic_write, file_digests, write_parquet
    from .tables import outcomes_table

    if outcomes is not None:
        result = check_cutoff_claims(tables[0], outcomes_table(outcomes), rules=rules)
    else:
        inputs = {Path(p).stem: p for p in tables}
        result = check_claims(inputs, rules=rules)
        write_parquet(table_out, result, metadata={"inputs": file_digests(inputs), "rules_version": rules})
        atomic_write(html, to_html(result))
    atomic_write(markdown, to_markdown(result))
    for row in result.itertuples():
        log.info("%s %s %s/%s: %s", row.claim, row.verdict, row.dataset, row.arch, row.statistic)
    return result

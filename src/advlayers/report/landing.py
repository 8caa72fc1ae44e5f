"""The claims as HTML for the report: the verdict summary line first, then the claims table (rendered, each claim
linked to the figure and the table it is tested on), then the rules (Markdown rendered to HTML).

`claims_html(table)` is the report's "Claims" page (results/claims.html); the part between the LANDING markers is
what the report's landing page (workflow/report/workflow.rst) shows before anything else. Links to other
results of the report use its `app.showResultInfo(path)`, with the paths of `advlayers.grid.layout`.
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd

from ..grid import layout

LANDING_START, LANDING_END = "<!-- landing -->", "<!-- /landing -->"
VERDICT_COLOURS = {"holds": "#cfe8cf", "fails": "#f4c7c3", "inconclusive": "#fce8b2", "not run": "#e8e8e8",
                   "confounded": "#e3d4f0", "not testable": "#e8e8e8"}
# claims rules v2 record these per row (docs/claims-v2.md "the record in the output")
V2_COLUMNS = (("control", "control"), ("control_value", "control value"), ("verdict_unadjusted", "own verdict"),
              ("p_value", "p"), ("holds_familywise", "holds familywise (Holm)"), ("image_part", "images"),
              ("seeds", "seeds"))
# the paper figure a claim is tested on (its `figure` column starts with it) -> the figure and table of the run
SOURCES = {"Fig. 5": "layer_cutoff", "Fig. 6": "module_subsets", "Fig. 7": "reinit", "Fig. 8": "feature_divergence"}


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def summary_line(table: pd.DataFrame, verdicts) -> str:
    """'N holds, N fails, N inconclusive, N not run' (every verdict named, zeros included)."""
    counts = table["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in verdicts)


def sources(figure: str, dataset: str) -> tuple[str, str]:
    """(figure stem, table name) a claim of paper figure `figure` on `dataset` is tested on."""
    if figure.startswith("Fig. 2-4") or figure == "control":
        return layout.cutoff_figure(dataset), layout.cutoff_table(dataset)
    for prefix, name in SOURCES.items():
        if figure.startswith(prefix):
            return name, name
    raise ValueError(f"claim figure {figure!r} names no figure of the run (known: Fig. 2-4, {', '.join(SOURCES)})")


def result_link(path: str, text: str) -> str:
    """A link that opens the report's result `path` (a relative artifact path)."""
    return f"<a href=\"javascript:app.showResultInfo('{html.escape(path)}')\">{html.escape(text)}</a>"


def _uses(figure: str, dataset: str) -> str:
    stem, table = sources(figure, dataset or "")
    png = next(p for p in layout.figure_paths(stem) if p.endswith(".png"))
    return f"{result_link(png, 'figure')}, {result_link(layout.table_html_path(table), 'table')}"


def claims_table_html(table: pd.DataFrame) -> str:
    """The claims table: claim, what it says, where, statistic, value with its 95% interval, threshold, verdict,
    links to the figure and the table it is tested on, note."""
    v2 = [(c, h) for c, h in V2_COLUMNS if c in table]
    header = ("claim", "figure", "what the paper says", "dataset / arch", "statistic", "value [95% interval]",
              "holds when", "verdict", *(h for _, h in v2), "tested on", "note")
    rows = []
    for r in table.itertuples():
        value = f"{_fmt(r.value)} [{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}]" if _fmt(r.ci_lo) and _fmt(r.ci_hi) else \
            _fmt(r.value) or ("not computable (see note)" if r.verdict != "not run" else "")
        where = f"{r.dataset} / {r.arch}" + (f" ({r.variant})" if r.variant else "") if r.dataset else ""
        cells = [html.escape(str(v)) for v in (r.claim, r.figure, r.claim_text, where, r.statistic, value,
                                                 f"{r.side} {r.threshold:g}")]
        colour = VERDICT_COLOURS.get(r.verdict, "#fff")
        cells.append(f"<b>{html.escape(r.verdict)}</b>")
        cells += [html.escape(_fmt(v) if isinstance(v, float) else str(v if v is not None else ""))
                  for v in (getattr(r, c) for c, _ in v2)]
        cells.append(_uses(r.figure, r.dataset) if r.verdict != "not run" else "")
        cells.append(html.escape(str(r.note or "")))
        tds = "".join(f"<td style='background:{colour}'>{c}</td>" if i == 7 else f"<td>{c}</td>"
                      for i, c in enumerate(cells))
        rows.append(f"<tr id='claim-{html.escape(r.claim)}'>{tds}</tr>")
    head = "".join(f"<th>{h}</th>" for h in header)
    return f"<table class='claims'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def markdown_html(text: str) -> str:
    """The small Markdown of the claims' rules as HTML: paragraphs, '* ' bullet lists (with indented continuation
    lines), **bold** and `code`."""
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines[0].startswith("* "):
            items = []
            for line in lines:
                if line.startswith("* "):
                    items.append(line[2:].strip())
                else:
                    items[-1] += " " + line.strip()
            blocks.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        else:
            blocks.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "".join(blocks)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


STYLE = ("body{font-family:sans-serif;font-size:13px} table.claims{border-collapse:collapse;font-size:12px} "
         "table.claims td,table.claims th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}")


def claims_html(table: pd.DataFrame, verdicts, rules: str, summary: str | None = None) -> str:
    """results/claims.html: summary line (`summary`, else counted over `verdicts`) and claims table (the landing
    part), then the rules."""
    landing = (f"{LANDING_START}<p class='verdicts'><b>Verdicts: {summary or summary_line(table, verdicts)}</b> "
               f"({len(table)} claim checks)</p>{claims_table_html(table)}{LANDING_END}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>claims</title><style>{STYLE}</style></head>"
            f"<body><h2>Does this run reproduce the paper?</h2>{landing}<h3>Rules</h3>{markdown_html(rules)}"
            "</body></html>\n")


def landing_part(page: str) -> str:
    """The landing part of a claims page written by `claims_html` ('' if it has none)."""
    start, end = page.find(LANDING_START), page.find(LANDING_END)
    return page[start + len(LANDING_START):end] if 0 <= start < end else ""

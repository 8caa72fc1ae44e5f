"""The report leads with the verdicts: the landing page (workflow/report/workflow.rst, rendered as `snakemake
--report` renders it: Jinja over the report's file records, then docutils) shows the verdict summary line and
the rendered claims table first, each claim linked to its figure and table, then one section per figure with
its caption and table; the claims page renders the rules' Markdown."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from advlayers.report import claims as claims_module
from advlayers.report.claim_rules import BY_ID, _row
from advlayers.report.landing import claims_html, landing_part, markdown_html, sources, summary_line

from helpers import REPO

jinja2 = pytest.importorskip("jinja2")
docutils_core = pytest.importorskip("docutils.core")


def claims_table() -> pd.DataFrame:
    rows = [_row(BY_ID["C0"], "digits", "resnet18", value=0.3, lo=0.2, hi=0.4),
            _row(BY_ID["C2"], "digits", "resnet18", value=0.4, lo=0.3, hi=0.5, note="G from 64 images"),
            _row(BY_ID["C4"], "digits", "resnet18", value=0.5, lo=0.3, hi=0.7),
            _row(BY_ID["C1a"], "digits", "resnet18", note="G <= 0: no ratio"),
            _row(BY_ID["C6a"], status="not run", note="no module_subsets analysis in the config")]
    return pd.DataFrame(rows)


@pytest.fixture
def record(tmp_path):
    def make(path, labels, category, caption=""):
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if not file.exists():
            file.write_text("x")
        return SimpleNamespace(path=Path(path), target=file.name, labels=labels, caption=caption,
                               category=SimpleNamespace(name=category))

    return make


def render_landing(files, config=None) -> str:
    """workflow.rst as Snakemake renders it (report/__init__.py: Jinja with trim/lstrip blocks, then docutils'
    html writer)."""
    template = (REPO / "workflow" / "report" / "workflow.rst").read_text()
    snakemake = SimpleNamespace(config=config or {"datasets": {"digits": {}}, "seeds": [0]})
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(
        snakemake=snakemake, categories={}, files=files)
    return docutils_core.publish_parts(text, writer="html", settings_overrides={"report_level": 2})["html_body"]


def test_landing_page_leads_with_verdicts_and_rendered_claims(tmp_path, record, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = claims_module.to_html(claims_table())
    claims = record("results/claims.html", {"page": "claims"}, "Claims")
    claims.path.write_text(page)
    figure = record("results/figures/cutoff_digits.png", {"figure": "cutoff_digits"}, "Fig. 2",
                    caption="<p><strong>Block-wise retraining</strong> caption text</p>\n")
    table = record("results/tables/cutoff_digits.html", {"table": "cutoff_digits"}, "Tables")
    other = record("results/tables/outcomes.html", {"table": "outcomes"}, "Tables")
    html = render_landing([figure, table, other, claims])
    assert "system-message" not in html and "System Message" not in html, html
    verdicts = html.index("Verdicts: 1 holds, 1 fails, 2 inconclusive, 1 not run")
    assert "[, ]" not in html and "not computable (see note)" in html  # an interval that could not be computed
    first_claim = html.index("<td>C0</td>")
    assert verdicts < first_claim < html.index("Figures") < html.index("About this run")
    assert "<table class='claims'>" in html and "**" not in html  # rendered, not raw Markdown
    # each claim that ran links to the figure and the table it is tested on; "not run" links nothing
    row = re.search(r"<tr id='claim-C2'>.*?</tr>", html).group(0)
    assert "showResultInfo('results/figures/cutoff_digits.png')" in row
    assert "showResultInfo('results/tables/cutoff_digits.html')" in row
    assert "showResultInfo" not in re.search(r"<tr id='claim-C6a'>.*?</tr>", html).group(0)
    # one section per figure: caption visible (not behind a button), the figure inline, its own table linked
    section = html[html.index("id=\"figure-cutoff_digits\""):]
    assert "<strong>Block-wise retraining</strong> caption text" in section
    assert "results['results/figures/cutoff_digits.png'].data_uri" in section
    assert "its table (cutoff_digits)" in section and "outcomes" not in section
    assert "Fig. 2: cutoff_digits" in html


def test_landing_page_without_claims_says_what_to_build(record):
    html = render_landing([])
    assert "no claims check" in html and "snakemake claims" in html and "system-message" not in html


def test_claims_page_summary_table_and_rules():
    table = claims_table()
    page = claims_module.to_html(table)
    assert summary_line(table, ("holds", "fails", "inconclusive", "not run")) in page
    part = landing_part(page)
    assert part.startswith("<p class='verdicts'>") and "<table class='claims'>" in part and "Rules" not in part
    rules = page[page.index("<h3>Rules</h3>"):]
    assert "<b>G</b>" in rules and "<li>" in rules and "**" not in rules and "\n* " not in rules
    assert markdown_html("A **b** `c`\n\n* one\n  more\n* two") == \
        "<p>A <b>b</b> <code>c</code></p><ul><li>one more</li><li>two</li></ul>"
    assert claims_html(table.iloc[:0], ("holds",), "x").count("<tr") == 1  # an empty run: the header only


def test_every_claim_figure_has_a_source():
    from advlayers.report.claim_rules import CLAIMS

    for claim in CLAIMS:
        stem, table = sources(claim.figure, "digits")
        assert stem and table
    assert sources("Fig. 2-4 (i)", "digits") == ("cutoff_digits", "cutoff_digits")
    with pytest.raises(ValueError, match="Fig. 9"):
        sources("Fig. 9", "digits")

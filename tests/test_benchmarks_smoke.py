"""CI smoke test of benchmarks/run.py --quick: the script runs end to end and writes a report with its tables.
No timing assertions (absolute and relative times depend on the machine and its load)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # end to end: about a minute (more on a loaded machine)
def test_benchmarks_quick_writes_a_table(tmp_path):
    pytest.importorskip("torchattacks")
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Machine", "## 1. PGD-7 throughput", "## 2. PGD-20 evaluation", "## 3. Adversarial training",
                    "## 5. Memory", "## 4. Pipeline", "## 6. GPU", "## Goals"):
        assert heading in text, heading
    assert "| resnet18 | torchattacks fp32 |" in text
    assert "| conventional |" in text and "| adversarial |" in text
    assert "not measured: no gpu" in text.lower() or "Measured on" in text


def test_demo_budget_counts_the_start_up_of_every_job_that_starts_python():
    """benchmarks/demo_budget.py's start-up share: each rule maps to the script its jobs run (None: no process);
    a run's rule it does not know stops the count instead of counting as free."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import demo_budget

    scripts = demo_budget.rule_scripts()
    assert scripts["pretrain"] == "pretrain" and scripts["cutoff_claims"] == "claims"
    assert scripts["evaluate_autoattack"] == "evaluate" and scripts["embed_features"] == "embed_features"
    assert scripts["table_rebuild_marker"] is None and scripts["all_figures"] is None and scripts["fig2"] is None
    imports = demo_budget.script_imports("evaluate")
    assert imports.startswith("import snakemake.script") and "advlayers.protocol" in imports
    assert "pandas" not in imports  # an evaluation job writes its outcomes with pyarrow alone
    cost = demo_budget.overhead({"evaluate": 3, "table_rebuild_marker": 7, "fig2": 1},
                                {"evaluate": 1.5, "table": 0.4})
    assert cost == {"evaluate": {"jobs": 3, "each": 1.5, "cpu": 4.5}}
    with pytest.raises(SystemExit, match="not_a_rule"):
        demo_budget.overhead({"not_a_rule": 1}, {})

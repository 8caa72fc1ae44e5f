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

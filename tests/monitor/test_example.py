"""The monitor example trains, saves its record and draws the plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gradconf.monitor import read_record

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "monitor_digits_cnn.py"


def test_example_writes_record_and_plot(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "1", "--every", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr

    record = read_record(tmp_path / "confusion.parquet")
    assert len(record) == 23  # ceil(1,437 training images / 64)
    assert record.loc[record["measured"], "step"].tolist() == list(range(0, 23, 4))
    assert record["finite"].all()
    assert (tmp_path / "confusion.png").read_bytes().startswith(b"\x89PNG")
    assert "epoch 0: loss" in completed.stderr

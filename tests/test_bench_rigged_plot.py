"""`python benchmarks/bench_rigged.py plot`: each add-on drawn against the baseline of its own device call, and a
table without a baseline refused by name."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("cam_psnr", "frame_psnr", "cam_psnr_masked", "cross_psnr", "train_seconds", "num_gaussians")


def _row(level: float) -> dict:
    return {"seeds": [0, 1, 2], **{column: {"mean": level, "spread": 0.1, "n": 3} for column in COLUMNS}}


def _plot(results: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/bench_rigged.py", "plot", "--results", str(results),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)


def test_plot_draws_every_call_against_its_own_baseline(tmp_path):
    calls = {"A": {"table": {"rows": {"baseline": _row(29.0), "region_weights": _row(29.1)}}},
             "B": {"table": {"rows": {"baseline": _row(30.0), "all_five": _row(29.5), "gha": _row(25.0)}}}}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"calls": calls}))
    result = _plot(results, tmp_path / "rows.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rows.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_a_table_without_its_baseline(tmp_path):
    results = tmp_path / "table.json"
    results.write_text(json.dumps({"rows": {"region_weights": _row(29.1)}}))
    result = _plot(results, tmp_path / "rows.png")
    assert result.returncode != 0 and not (tmp_path / "rows.png").exists()
    assert f"{results}: every table needs its own baseline row" in result.stderr


def test_plot_refuses_a_file_with_no_add_on_rows(tmp_path):
    results = tmp_path / "table.json"
    results.write_text(json.dumps({"rows": {"baseline": _row(29.0), "gha": _row(25.0)}}))
    result = _plot(results, tmp_path / "rows.png")
    assert result.returncode != 0 and not (tmp_path / "rows.png").exists()
    assert f"{results}: no add-on rows" in result.stderr

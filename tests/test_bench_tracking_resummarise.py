"""`python benchmarks/bench_tracking.py --resummarise JSON --out OUT`: a stored result re-summarised, and a file that
is not one refused with one line naming it and the missing key, nothing written."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "benchmarks" / "results" / "tracking_photometric_h100_2026-12-07.json"


def _resummarise(source: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/bench_tracking.py", "--resummarise", str(source),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)


def test_a_stored_result_is_resummarised_with_the_measures_added_since(tmp_path):
    # This result predates the rotation about each sequence's mean: re-summarised, it keeps every number it had
    # and gains that measure, computed from its unchanged rows.
    result = _resummarise(STORED, tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    stored, again = json.loads(STORED.read_text()), json.loads((tmp_path / "out.json").read_text())
    assert again["runs"] == stored["runs"] and again["summary"].keys() == stored["summary"].keys()
    for name, summary in stored["summary"].items():
        assert {key: again["summary"][name][key] for key in summary} == summary, name
        assert "rotation_about_mean_median_deg" not in summary
        assert again["summary"][name]["rotation_about_mean_median_deg"] >= 0
    assert again["resummarised"]["command"].startswith("python ")


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not a readable JSON file"),
    (json.dumps({"rows": []}), r"no 'runs' list of per-frame rows"),
    (json.dumps({"runs": [{"setup": "multiview", "variant": "default"}]}), r"a row of 'runs' has no '\w+'"),
])
def test_a_file_that_is_not_a_bench_tracking_result_is_named_and_nothing_is_written(tmp_path, content, message):
    source, out = tmp_path / "other.json", tmp_path / "out.json"
    source.write_text(content)
    result = _resummarise(source, out)
    assert result.returncode != 0 and not out.exists()
    assert result.stderr.count("\n") == 1 and str(source) in result.stderr
    assert re.search(message, result.stderr), result.stderr

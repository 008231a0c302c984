"""benchmarks/bench_retracked.py's split run: the truth's rows taken from earlier runs (`--truth-runs`) and a tracking
reused from WORK (`--reuse-tracking`) are checked before any training."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The script imports its sibling benchmark modules (bench_tracking, bench_ablation, ...) as it does when run as
# `python benchmarks/bench_retracked.py`, where benchmarks/ is sys.path[0].
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("bench_retracked", ROOT / "benchmarks" / "bench_retracked.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SPLITS = {"eval_camera_ids": ["cam03", "cam07"], "eval_frame_ids": ["frame_0009", "frame_0019"]}


def _row(variant: str, seed: int, overrides=(), psnr: float = 30.0, **extra) -> dict:
    return {"variant": variant, "seed": seed, "overrides": list(overrides),
            "splits": {"test_cameras": {"psnr": psnr, "ssim": 0.9}}, **extra}


def _runs(path: Path, rows: list) -> Path:
    path.write_text(json.dumps({"device": "test", "runs": rows}))
    return path


def test_truth_rows_takes_the_variant_without_overrides_renamed(tmp_path):
    first = _runs(tmp_path / "a.json", [_row("baseline", 1, psnr=31.0), _row("free_view", 1, ["x=1"]),
                                        _row("baseline", 2, error="training: boom"), _row("baseline", 2, psnr=29.0)])
    second = _runs(tmp_path / "b.json", [_row("baseline", 5, psnr=30.0)])
    rows, seeds = bench.truth_rows([first, second], "baseline")
    assert seeds == [1, 2, 5]
    assert [(row["variant"], row["seed"], row["source"]) for row in rows] == [
        ("truth", 1, str(first)), ("truth", 2, str(first)), ("truth", 5, str(second))]
    assert all("error" not in row for row in rows)
    # The merged summary compare() reads: the truth's rows summarised like bench_ablation's own.
    summary = bench.summarise(rows + [_row("retracked", 1, psnr=29.5)], ["truth", "retracked"])
    comparison = bench.compare({"summary": summary})
    assert comparison["test_cameras"]["truth_psnr"]["mean"] == pytest.approx(30.0)
    assert comparison["test_cameras"]["truth_psnr"]["n"] == 3
    assert comparison["test_cameras"]["difference_db"] == pytest.approx(-0.5)


def test_truth_rows_refuses_a_matching_row_with_overrides(tmp_path):
    path = _runs(tmp_path / "a.json", [_row("baseline", 1), _row("baseline", 2, ["train.seed=9"])])
    with pytest.raises(SystemExit, match=r"a\.json: baseline seed 2 has overrides"):
        bench.truth_rows([path], "baseline")


def test_truth_rows_accept_the_truths_own_subject_and_mesh_head_only(tmp_path):
    own = ["dataset.dataroot=/work/data/synthetic_demo/id0", "load_meshhead_checkpoint=/tmp/x/meshhead_latest"]
    path = tmp_path / "report.json"  # this script's own report keeps its rows under `ablation`
    path.write_text(json.dumps({"ablation": {"runs": [_row("truth", 0, own)]}}))
    rows, seeds = bench.truth_rows([path], "truth", "synthetic_demo/id0")
    assert seeds == [0] and rows[0]["variant"] == "truth"
    for other in (["dataset.dataroot=/work/data/synthetic_demo/id1"], own + ["train.seed=3"]):
        path = _runs(tmp_path / "b.json", [_row("truth", 0, other)])
        with pytest.raises(SystemExit, match="has overrides"):
            bench.truth_rows([path], "truth", "synthetic_demo/id0")
    with pytest.raises(SystemExit, match="has overrides"):  # no subject given: no dataroot is the truth's
        bench.truth_rows([_runs(tmp_path / "c.json", [_row("truth", 0, own)])], "truth")


def test_truth_rows_refuses_none_found_and_a_seed_twice(tmp_path):
    path = _runs(tmp_path / "a.json", [_row("free_view", 1, ["x=1"]), _row("baseline", 2, error="boom")])
    with pytest.raises(SystemExit, match="no finished baseline row"):
        bench.truth_rows([path], "baseline")
    with pytest.raises(SystemExit, match="no finished other row"):
        bench.truth_rows([path], "other")
    with pytest.raises(SystemExit, match=r"gone\.json is missing"):
        bench.truth_rows([tmp_path / "gone.json"], "baseline")
    twice = _runs(tmp_path / "b.json", [_row("baseline", 1)])
    with pytest.raises(SystemExit, match="seed 1 is also in"):
        bench.truth_rows([twice, twice], "baseline")


def _tracked_work(work: Path, tracked_splits: dict = SPLITS, plates: bool = False) -> Path:
    """A WORK folder as a tracking run leaves it: tracking.json and the tracked subject(s) (meta.json only)."""
    subjects = {"retracked": "retracked", **({"retracked_plates": "retracked_plates"} if plates else {})}
    for folder in subjects.values():
        (work / folder).mkdir(parents=True)
        (work / folder / "meta.json").write_text(json.dumps({"splits": tracked_splits}))
    bench.write_json(work / bench.TRACKING_JSON, {"scale": "demo", "truth_splits": SPLITS, "subjects": subjects,
                                                  "tracking": {"seconds": 1.0}})
    return work


def test_reused_tracking_returns_the_subjects_and_record(tmp_path):
    work = _tracked_work(tmp_path / "work", plates=True)
    assert not (work / (bench.TRACKING_JSON + ".tmp")).exists()
    subjects, record = bench.reused_tracking(work, "demo", plates=True)
    assert subjects == {"retracked": work / "retracked", "retracked_plates": work / "retracked_plates"}
    assert record["tracking"] == {"seconds": 1.0}
    assert bench.reused_tracking(work, "demo", plates=False)[0] == {"retracked": work / "retracked"}


def test_reused_tracking_refuses_a_missing_record_or_subject(tmp_path):
    with pytest.raises(SystemExit, match=str(tmp_path / "work" / "tracking.json") + " is missing"):
        bench.reused_tracking(tmp_path / "work", "demo", plates=False)
    work = _tracked_work(tmp_path / "other")
    with pytest.raises(SystemExit, match="has no retracked_plates subject"):
        bench.reused_tracking(work, "demo", plates=True)
    with pytest.raises(SystemExit, match="tracked at scale demo, not full"):
        bench.reused_tracking(work, "full", plates=False)
    (work / "retracked" / "meta.json").unlink()
    with pytest.raises(SystemExit, match=str(work / "retracked") + r" \(from .*\) is missing"):
        bench.reused_tracking(work, "demo", plates=False)


def test_reused_tracking_refuses_a_split_mismatch(tmp_path):
    work = _tracked_work(tmp_path / "work", tracked_splits={**SPLITS, "eval_frame_ids": ["frame_0009"]})
    with pytest.raises(SystemExit, match=str(work / "retracked") + ": held-out split .* differs"):
        bench.reused_tracking(work, "demo", plates=False)


def test_bench_ablation_starts_a_run_again_when_its_inputs_changed(tmp_path):
    """bench_ablation resumes the runs it finds; a run trained from another mesh head (same path, other contents)
    must be trained again, not reported as the new one."""
    from bench_ablation import inputs_fingerprint, start_fresh_if_inputs_changed

    root = Path(__file__).resolve().parents[1]
    config = root / "config" / "train_gaussianhead_synthetic_demo.yaml"
    subject = tmp_path / "subject"
    subject.mkdir()
    (subject / "meta.json").write_text("{}")
    head = tmp_path / "meshhead_latest"
    head.write_bytes(b"mesh head A")
    args = [f"dataset.dataroot={subject}", f"load_meshhead_checkpoint={head}", "train.seed=0"]
    first = inputs_fingerprint(config, args)
    assert inputs_fingerprint(config, args) == first
    work, run = tmp_path / "work", "ablation_x_seed0"
    assert not start_fresh_if_inputs_changed(work, run, first)  # nothing there yet
    for path in (work / "checkpoints" / run, work / "log" / run, work / "results" / f"{run}_eval"):
        path.mkdir(parents=True)
    (work / "results" / f"{run}_reenact_strip.jpg").write_bytes(b"jpg")
    (work / "results" / "ablation_x_seed01").mkdir()  # another run whose name starts alike: kept
    assert not start_fresh_if_inputs_changed(work, run, first)  # same inputs: resumed as it is
    assert (work / "checkpoints" / run).is_dir()
    head.write_bytes(b"mesh head B")
    changed = inputs_fingerprint(config, args)
    assert changed != first
    assert start_fresh_if_inputs_changed(work, run, changed)
    assert not (work / "checkpoints" / run).exists() and not (work / "log" / run).exists()
    assert not (work / "results" / f"{run}_eval").exists()
    assert not (work / "results" / f"{run}_reenact_strip.jpg").exists()
    assert (work / "results" / "ablation_x_seed01").is_dir()
    (subject / "meta.json").write_text('{"retracked": true}')
    assert inputs_fingerprint(config, args) != changed
    assert inputs_fingerprint(config, [*args[:2], "train.seed=1"]) != changed


def test_truth_rows_compare_only_files_stored_alike(tmp_path):
    # The GHA-scale configs write `fine` files since 2026-12-07; a truth evaluated on its lossless file would sit
    # about 0.1 dB above re-tracked runs evaluated on `fine` files, a difference that is the store, not the tracking.
    from cgha.compact.presets import preset_overrides
    from cgha.config import TrainConfig, load_config

    def store(overrides):
        config = ROOT / "config" / "train_gaussianhead_synthetic.yaml"
        return vars(load_config(TrainConfig, config, overrides, stage="gaussianhead").compact.store)

    fine, lossless = store([]), store(preset_overrides("lossless"))
    older = _runs(tmp_path / "older.json", [_row("baseline", 1)])  # written before rows recorded their store
    assert bench.truth_rows([older], "baseline", store=lossless)[1] == [1]
    with pytest.raises(SystemExit, match=r"older\.json: baseline seed 1 was evaluated on a file stored otherwise.*"
                                         r"'network': \('fp16', 'int6'\).*presets lossless"):
        bench.truth_rows([older], "baseline", store=fine)
    newer = _runs(tmp_path / "newer.json", [_row("baseline", 2, compact_store=fine)])
    assert bench.truth_rows([newer], "baseline", store=fine)[1] == [2]
    with pytest.raises(SystemExit, match="stored otherwise"):
        bench.truth_rows([newer], "baseline", store=lossless)

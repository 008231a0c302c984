"""Fault runs made as a user would (issue 15): bad ids, splits, damaged or wrong checkpoint files, two trainings
into one folder. End-to-end cases run the entry scripts in a subprocess and check the one-line error and the exit
status; unit cases beside them pin the pieces (file sniffing, the checksum record)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cgha.config import TrainConfig, load_config
from cgha.errors import CheckpointError
from cgha.recorder.checkpoint import load_file, save_atomic
from cgha.recorder.file_kind import describe_file_kind, file_kind
from cgha.recorder.run_recorder import RunRecorder

ROOT = Path(__file__).resolve().parents[1]
MESH_CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"
HEAD_CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(64)


def run_script(script: str, config: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, "--config", str(config), *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def mesh_overrides(subject: Path, out: Path, *extra: str) -> list:
    """A mesh-head run of a few seconds on the tiny subject, written under `out`."""
    return [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=32",
            "dataset.num_sample_view=2", "dataset.num_workers=0", "meshheadmodule.tet_resolution=16",
            "train.pretrain_sphere_iters=1", "train.max_iters=2", "device=cpu",
            f"recorder.checkpoint_path={out}/ck", f"recorder.result_path={out}/res", f"recorder.logdir={out}/log",
            "recorder.name=run", "train.deform_prior_iters=0", "train.loss_weights.expression_prior=0", *extra]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert result.stderr.strip() == message, f"not one line:\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture(scope="module")
def trained_mesh_run(tiny_subject, tmp_path_factory) -> Path:
    """A finished 2-iteration mesh-head run; tests copy its folder before damaging it."""
    out = tmp_path_factory.mktemp("mesh_run")
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(tiny_subject, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def mesh_run(trained_mesh_run, tmp_path) -> Path:
    """A private copy of the finished run's output folder; its checkpoints live in `<copy>/ck/run`."""
    copy = tmp_path / "out"
    shutil.copytree(trained_mesh_run, copy)
    return copy


def resume(subject: Path, out: Path) -> subprocess.CompletedProcess:
    return run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(subject, out, "train.max_iters=3"))


# --------------------------------------------------------------------------------------- 1: ids as written
def renamed_frames(subject: Path, target: Path, names: list) -> Path:
    """A copy of `subject` whose frame folders are renamed, in order, to `names`."""
    shutil.copytree(subject, target)
    for folder in ("images", "cameras", "params"):
        for old, new in zip(sorted(p.name for p in (target / folder).iterdir()), names):
            (target / folder / old).rename(target / folder / new)
    return target


def test_octal_looking_frame_ids_name_the_frames_written(tiny_subject, tmp_path):
    # YAML 1.1 reads 0036 as octal 30: the run held out frame 0030 and trained on 0036, without a word.
    subject = renamed_frames(tiny_subject, tmp_path / "subject", ["0030", "0031", "0032", "0036"])
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(
        subject, tmp_path, "dataset.split_from_meta=false", "dataset.eval_camera_ids=[cam03]",
        "dataset.eval_frame_ids=[0036]", "train.max_iters=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "ck" / "run" / "config.yaml").read_text())
    assert saved["dataset"]["eval_frame_ids"] == ["0036"]


def test_unquoted_boolean_camera_id_says_to_quote_it(tiny_subject, tmp_path):
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(tiny_subject, tmp_path,
                                                                          "dataset.camera_ids=[on, cam01]"))
    assert_one_line_error(result, "dataset.camera_ids[0]", "quote")


# ------------------------------------------------------------------------------------- 2: meta.json splits
def with_meta(subject: Path, target: Path, meta: dict) -> Path:
    shutil.copytree(subject, target)
    (target / "meta.json").write_text(json.dumps(meta))
    return target


def test_meta_split_under_unknown_keys_fails_naming_them(tiny_subject, tmp_path):
    # Before: held-out sets came out empty and the run trained on every view, exit 0.
    subject = with_meta(tiny_subject, tmp_path / "subject", {"holdout": {"cams": ["cam03"], "frames": ["0003"]}})
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(subject, tmp_path))
    assert_one_line_error(result, "split_from_meta", "holdout.cams", "holdout.frames", "meta.json")


def test_meta_split_in_the_split_test_form_is_read(tiny_subject, tmp_path):
    subject = with_meta(tiny_subject, tmp_path / "subject", {"split": {"test_cameras": ["cam02"],
                                                                       "test_frames": ["0002"]}})
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(subject, tmp_path, "train.max_iters=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out cameras" in result.stdout


def test_empty_held_out_split_from_meta_is_an_error(tiny_subject, tmp_path):
    subject = with_meta(tiny_subject, tmp_path / "subject", {"splits": {"eval_camera_ids": [], "eval_frame_ids": []}})
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(subject, tmp_path))
    assert_one_line_error(result, "held-out split is empty", "split_from_meta=false")


# ------------------------------------------------------------------------------ 5: checksums, NaN, GHA files
def test_flipped_bytes_in_a_checkpoint_are_detected_on_resume(tiny_subject, mesh_run):
    # Before: 8 flipped bytes resumed silently with changed weights.
    latest = mesh_run / "ck" / "run" / "meshhead_latest"
    blob = bytearray(latest.read_bytes())
    for offset in range(8):
        blob[len(blob) // 2 + 997 * offset] ^= 0x5A
    latest.write_bytes(bytes(blob))
    assert_one_line_error(resume(tiny_subject, mesh_run), str(latest), "checksum mismatch", "meshhead_epoch_N",
                          "train.resume=false")


def test_non_finite_weights_name_the_file(tiny_subject, mesh_run):
    latest = mesh_run / "ck" / "run" / "meshhead_latest"
    state = torch.load(latest, weights_only=True)
    name = next(key for key, value in state.items() if value.is_floating_point() and value.numel() > 4)
    state[name].view(-1)[:3] = float("nan")
    torch.save(state, latest)  # as another tool would write it: no checksum, so only the value check can tell
    assert_one_line_error(resume(tiny_subject, mesh_run), str(latest), f"non-finite values in '{name}'")


def test_gha_style_plain_checkpoints_still_resume(tiny_subject, mesh_run):
    run = mesh_run / "ck" / "run"
    for kind in ("meshhead_latest", "meshhead_train_state_latest"):
        torch.save(torch.load(run / kind, weights_only=True), run / kind)  # plain torch.save, no checksum record
    result = resume(tiny_subject, mesh_run)
    assert result.returncode == 0, result.stderr[-3000:]


def test_our_checkpoints_are_plain_state_dicts_for_torch(tmp_path):
    state = {"weight": torch.randn(3, 4), "bias": torch.zeros(4)}
    save_atomic(state, tmp_path / "net_latest")
    loaded = torch.load(tmp_path / "net_latest", weights_only=True)  # what GHA's own code does
    assert set(loaded) == {"weight", "bias"} and torch.equal(loaded["weight"], state["weight"])
    assert torch.equal(load_file(tmp_path / "net_latest")["weight"], state["weight"])


def test_damaged_checksum_record_is_named(tmp_path):
    path = tmp_path / "net_latest"
    save_atomic({"weight": torch.randn(3)}, path)
    blob = bytearray(path.read_bytes())
    blob[-64:-60] = b"zzzz"  # inside the hex digest of the archive comment
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum record is damaged"):
        load_file(path)


# ------------------------------------------------------------------------------------ 10: one run per folder
def test_second_training_into_the_same_folder_fails(tiny_subject, tmp_path):
    cfg = load_config(TrainConfig, MESH_CONFIG, mesh_overrides(tiny_subject, tmp_path), stage="meshhead")
    holder = RunRecorder(cfg.recorder)  # a training of this process is writing into ck/run
    try:
        result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(tiny_subject, tmp_path))
        assert_one_line_error(result, "another training is writing to", str(tmp_path / "ck" / "run"),
                              "recorder.name")
    finally:
        holder.close()
    assert not (tmp_path / "ck" / "run" / "meshhead_latest").exists()


def test_run_lock_is_released_on_close(tmp_path):
    cfg = load_config(TrainConfig, None, [f"recorder.checkpoint_path={tmp_path}", f"recorder.logdir={tmp_path}/log",
                                          f"recorder.result_path={tmp_path}/res"])
    RunRecorder(cfg.recorder).close()
    probe = subprocess.run([sys.executable, "-c", (
        "import fcntl, sys; handle = open(sys.argv[1], 'a'); fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)"),
        str(tmp_path / cfg.recorder.name / ".lock")], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr


# -------------------------------------------------------------------------------------- 12: the right culprit
def test_png_given_as_a_checkpoint_is_called_a_png(tiny_subject, tmp_path):
    # Before: torch's 445-character advice about weights_only.
    image = tmp_path / "face.png"
    image.write_bytes(PNG_BYTES)
    overrides = mesh_overrides(tiny_subject, tmp_path, f"load_meshhead_checkpoint={image}",
                               "meshheadmodule.tet_resolution=20", "gaussianheadmodule.num_add_mouth_points=50",
                               "dataset.resolution=64", "compact.enable=false")
    message = assert_one_line_error(run_script("train_gaussianhead.py", HEAD_CONFIG, *overrides),
                                    f"{image} is a PNG image, not a mesh-head checkpoint")
    assert "weights_only" not in message


@pytest.mark.parametrize("content, kind", [(PNG_BYTES, "a PNG image"), (b"", "an empty file (0 bytes)")])
def test_wrong_file_given_as_the_avatar_is_named_not_the_missing_supres(tiny_subject, tmp_path, content, kind):
    # Before: "super-resolution checkpoint not found: .../supres_latest", blaming a file the user never named.
    avatar = tmp_path / "avatar.cgha"
    avatar.write_bytes(content)
    driver = ("dataset.image_files=''", "dataset.camera_path=''", "dataset.pose_code_path=''")
    for script, config, extra in (("evaluate.py", HEAD_CONFIG, ()),
                                  ("reenactment.py", ROOT / "config" / "reenactment_synthetic_demo.yaml", driver)):
        result = run_script(script, config, f"load_gaussianhead_checkpoint={avatar}", f"dataset.dataroot={tiny_subject}",
                            "dataset.original_resolution=64", "dataset.resolution=64", "device=cpu",
                            f"recorder.checkpoint_path={tmp_path}/ck", f"recorder.result_path={tmp_path}/res", *extra)
        assert_one_line_error(result, f"{avatar} is {kind}, not an avatar")


def test_truncated_checkpoint_suggests_a_numbered_copy(tiny_subject, mesh_run):
    latest = mesh_run / "ck" / "run" / "meshhead_latest"
    latest.write_bytes(latest.read_bytes()[:len(latest.read_bytes()) // 2])
    assert_one_line_error(resume(tiny_subject, mesh_run), str(latest), "truncated", "meshhead_epoch_N",
                          "train.resume=false")


@pytest.mark.parametrize("content, kind", [
    (b"", "empty"), (PNG_BYTES, "png"), (b"\xff\xd8\xff\xe0" + bytes(20), "jpeg"), (b"CGHA\x01\x00", "cgha"),
    (b"model: x\n", "text"), (b"\x00\x01\x02\x03\xfe", "unknown")])
def test_file_kinds(tmp_path, content, kind):
    path = tmp_path / "file"
    path.write_bytes(content)
    assert file_kind(path).name == kind
    assert describe_file_kind(path)


def test_file_kinds_of_archives(tmp_path):
    save_atomic({"w": torch.zeros(2)}, tmp_path / "ok")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(2))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:200])
    assert file_kind(tmp_path / "ok").name == "torch" and file_kind(tmp_path / "ok").is_torch_checkpoint
    assert file_kind(tmp_path / "arrays.npz").name == "npz"
    assert file_kind(tmp_path / "cut").name == "torch_truncated"
    with pytest.raises(CheckpointError, match="is a NumPy .npz archive, not a checkpoint"):
        load_file(tmp_path / "arrays.npz")


def test_compact_reader_names_what_a_wrong_file_is(tmp_path):
    from cgha.compact.codec import read_compact

    image = tmp_path / "avatar.cgha"
    image.write_bytes(PNG_BYTES)
    with pytest.raises(CheckpointError, match="not a compact avatar file: it is a PNG image"):
        read_compact(image)
    image.write_bytes(b"")
    with pytest.raises(CheckpointError, match="it is an empty file"):
        read_compact(image)


# ============================================================================= items 3, 4, 8, 9, 11, 14
def assert_ends_with_one_line_error(result: subprocess.CompletedProcess, *fragments: str,
                                    status: int = 2) -> str:
    """Training logs (and progress bars) precede the error: the run must end with one `error:` line and exit
    `status`, without a traceback."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def metrics_iterations(out: Path) -> list:
    """The `iter` of every training-loss record (held-out evaluations log extra records at the same iteration)."""
    records = [json.loads(line) for line in (out / "log" / "metrics.jsonl").read_text().splitlines()]
    return [record["iter"] for record in records if "loss" in record]


@pytest.fixture(scope="module")
def sphere_mesh_head(tmp_path_factory) -> Path:
    """A sphere-initialised mesh head (as tests/test_gaussianhead.py makes it) to start Gaussian-head runs from."""
    from cgha.module.mesh_head import MeshHeadModule, pretrain_sphere

    cfg = load_config(TrainConfig, HEAD_CONFIG, ["meshheadmodule.tet_resolution=20"], stage="gaussianhead")
    landmarks = torch.randn(80, 3, generator=torch.Generator().manual_seed(0)) * 0.25 + torch.tensor([0.0, 0.0, 0.9])
    torch.manual_seed(0)
    mesh_head = MeshHeadModule(cfg.meshheadmodule, landmarks)
    pretrain_sphere(mesh_head, 150, torch.device("cpu"), batch=2048)
    path = tmp_path_factory.mktemp("sphere") / "meshhead_latest"
    save_atomic(mesh_head.state_dict(), path)
    return path


def head_overrides(subject: Path, out: Path, mesh_head: Path, *extra: str) -> list:
    """A Gaussian-head run of a few seconds on the tiny subject, written under `out`."""
    return [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=64",
            "dataset.num_workers=0", "meshheadmodule.tet_resolution=20", "gaussianheadmodule.num_add_mouth_points=50",
            f"load_meshhead_checkpoint={mesh_head}", "device=cpu", "render.backend=torch", "train.max_iters=1",
            "compact.enable=false", f"recorder.checkpoint_path={out}/ck", f"recorder.result_path={out}/res",
            f"recorder.logdir={out}/log", "recorder.name=run", *extra]


@pytest.fixture(scope="module")
def compacted_head_run(tiny_subject, sphere_mesh_head, tmp_path_factory):
    """A 1-iteration Gaussian-head run compacted from its first step with codebooks larger than its Gaussians."""
    out = tmp_path_factory.mktemp("head_run")
    result = run_script("train_gaussianhead.py", HEAD_CONFIG, *head_overrides(
        tiny_subject, out, sphere_mesh_head, "compact.enable=true", "compact.start_iter=0",
        "compact.codebook_size=100000", "compact.codebook_sizes.feature=50000"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


# ------------------------------------------------------------------------ 3: a codebook larger than the model
def test_codebook_larger_than_the_gaussians_is_named(compacted_head_run):
    # Before: clamped to one code per Gaussian without a word (the file came out 2x smaller, not 13x).
    out, result = compacted_head_run
    gaussians = json.loads((out / "ck" / "run" / "compact_report.json").read_text())["num_gaussians"]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line and "Gaussians" in line]
    assert any(f"compact.codebook_size=100000 is larger than the model's {gaussians} Gaussians" in line
               and "group 'scale_rot'" in line for line in warnings), warnings
    assert any(f"compact.codebook_sizes.feature=50000 is larger than the model's {gaussians} Gaussians" in line
               and "group 'feature'" in line for line in warnings), warnings


# -------------------------------------------------------------------------- 4: which limit ends the run
def test_max_iters_that_epochs_cut_short_is_warned_about(tiny_subject, tmp_path):
    # Before: train.max_iters=300 ran 6 iterations here, and nothing said why.
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(
        tiny_subject, tmp_path, "train.max_iters=300", "train.epochs=2", "recorder.log_freq=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    last = metrics_iterations(tmp_path)[-1]
    warning = next(line for line in result.stderr.splitlines() if "WARNING" in line and "max_iters" in line)
    for fragment in ("train.max_iters=300 is never reached", "train.epochs=2", f"ends the run at iteration {last}",
                     "train.epochs=0"):
        assert fragment in warning, warning


def test_the_limit_that_ends_the_run_is_logged(tiny_subject, tmp_path):
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(tiny_subject, tmp_path, "train.epochs=5"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "meshhead: train.max_iters=2 ends the run at iteration 2" in result.stderr
    assert "never reached" not in result.stderr


# -------------------------------------------------------------------------------- 8: Ctrl-C saves the run
def test_sigint_saves_the_latest_state_and_the_run_resumes_from_it(tiny_subject, tmp_path):
    # Before: Ctrl-C at iteration 46 left only config.yaml ("error: interrupted").
    import signal
    import time

    command = [sys.executable, "train_meshhead.py", "--config", str(MESH_CONFIG), *mesh_overrides(
        tiny_subject, tmp_path, "train.max_iters=100000", "train.epochs=0", "recorder.log_freq=1",
        "recorder.save_freq=100000", "recorder.show_freq=100000")]
    # A child inherits an ignored SIGINT (pytest started in the background): give it the default disposition.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = tmp_path / "log" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().strip()) and process.poll() is None:
        assert time.monotonic() < deadline, "no metrics line within 240 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    interrupted = subprocess.CompletedProcess(command, process.returncode, "", stderr)
    run = tmp_path / "ck" / "run"
    assert_ends_with_one_line_error(interrupted, "interrupted at meshhead iteration", str(run / "meshhead_latest"),
                                    "meshhead_train_state_latest", "train.resume=true", status=130)
    stopped_at = load_file(run / "meshhead_train_state_latest")["iter"]
    assert stopped_at >= 1 and f"iteration {stopped_at}:" in stderr.strip().splitlines()[-1]
    load_file(run / "meshhead_latest")

    resumed = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(
        tiny_subject, tmp_path, f"train.max_iters={stopped_at + 2}", "train.epochs=0", "recorder.log_freq=1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at iteration {stopped_at} " in resumed.stderr
    iterations = metrics_iterations(tmp_path)
    assert iterations == sorted(set(iterations)) and iterations[-2:] == [stopped_at + 1, stopped_at + 2]


def test_stale_temp_files_of_a_killed_run_are_removed(tiny_subject, mesh_run):
    # Before: a SIGKILL during a save left `.meshhead_latest.<random>.tmp` (megabytes each) for good.
    run = mesh_run / "ck" / "run"
    stale = [run / ".meshhead_latest.k3j2h1x0.tmp", run / ".meshhead_train_state_epoch_0.a1b2c3d4.tmp"]
    for path in stale:
        path.write_bytes(bytes(1000))
    unrelated = run / "notes.tmp"
    unrelated.write_text("mine")
    result = resume(tiny_subject, mesh_run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(path.exists() for path in stale) and unrelated.read_text() == "mine"
    assert "removed 2 unfinished checkpoint file(s)" in result.stderr


# ---------------------------------------------------------------------- 9: metrics.jsonl after a resume
def test_resume_drops_the_metrics_logged_after_the_checkpoint(tiny_subject, mesh_run):
    # Before: iterations 3 and 4 appeared twice, with the interrupted run's values and the resumed run's.
    metrics = mesh_run / "log" / "metrics.jsonl"
    with open(metrics, "a") as handle:  # what a run killed at iteration 4 after saving at 2 leaves behind
        handle.write(json.dumps({"iter": 3, "epoch": 1, "loss": 123.0}) + "\n")
        handle.write(json.dumps({"iter": 4, "epoch": 1, "loss": 456.0}) + "\n")
        handle.write('{"iter": 5, "epo')  # cut short by the kill
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(
        tiny_subject, mesh_run, "train.max_iters=4", "recorder.log_freq=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    iterations = metrics_iterations(mesh_run)
    assert iterations == sorted(set(iterations)) and iterations[-2:] == [3, 4]
    assert "123.0" not in metrics.read_text() and "456.0" not in metrics.read_text()


# --------------------------------------------------------------------------- 11: unwritable output folders
@pytest.mark.parametrize("key", ["recorder.checkpoint_path", "recorder.logdir", "recorder.result_path"])
def test_unwritable_training_folder_is_named(tiny_subject, tmp_path, key):
    # Before: a traceback (NotADirectoryError). Tests run as root, where chmod stops nothing: the folder's parent
    # is a regular file instead.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script("train_meshhead.py", MESH_CONFIG, *mesh_overrides(tiny_subject, tmp_path),
                        f"{key}={blocker}/out")
    assert_ends_with_one_line_error(result, "cannot write to the output folder", str(blocker), key)
    assert not (tmp_path / "ck" / "run" / "meshhead_latest").exists()


def test_unwritable_result_folder_fails_before_evaluating(compacted_head_run, tiny_subject, tmp_path):
    # Before: every metric was computed, then a traceback.
    out, _ = compacted_head_run
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script("evaluate.py", HEAD_CONFIG, f"dataset.dataroot={tiny_subject}",
                        "dataset.original_resolution=64", "dataset.resolution=64", "device=cpu", "render.backend=torch",
                        f"recorder.checkpoint_path={out}/ck", "recorder.name=run",
                        f"recorder.result_path={blocker}/res")
    assert_ends_with_one_line_error(result, "cannot write to the output folder", f"{blocker}/res/run",
                                    "recorder.result_path")
    assert "PSNR" not in result.stdout


def test_unwritable_result_folder_fails_before_reenacting(compacted_head_run, tiny_subject, tmp_path):
    out, _ = compacted_head_run
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script("reenactment.py", ROOT / "config" / "reenactment_synthetic_demo.yaml",
                        f"load_gaussianhead_checkpoint={out}/ck/run/gaussianhead_compact.cgha",
                        f"dataset.dataroot={tiny_subject}", "dataset.image_files=''", "dataset.camera_path=''",
                        "dataset.pose_code_path=''", "dataset.original_resolution=64", "dataset.resolution=64",
                        "device=cpu", f"recorder.result_path={blocker}/res")
    assert_ends_with_one_line_error(result, "cannot write to the output folder", str(blocker),
                                    "recorder.result_path")


# ------------------------------------------------------------------------------ 14: a diverging training
def test_diverging_training_stops_in_one_line_and_keeps_the_last_checkpoint(tiny_subject, sphere_mesh_head,
                                                                            tmp_path):
    # Before: a traceback from the rasterizer, `ValueError: means contains NaN or inf values`.
    result = run_script("train_gaussianhead.py", HEAD_CONFIG, *head_overrides(
        tiny_subject, tmp_path, sphere_mesh_head, "lr_net=1e36", "train.max_iters=6", "recorder.save_freq=1"))
    run = tmp_path / "ck" / "run"
    message = assert_ends_with_one_line_error(result, "gaussianhead training diverged at iteration",
                                              "means contains NaN or inf", f"{run / 'gaussianhead_latest'} is kept",
                                              "lower the learning rate (lr_net=1e+36)")
    failed_at = int(message.split("diverged at iteration ")[1].split(":")[0])
    saved = load_file(run / "gaussianhead_train_state_latest")["iter"]
    assert saved == failed_at - 1
    load_file(run / "gaussianhead_latest")  # finite: a checkpoint with NaN/inf would be refused here

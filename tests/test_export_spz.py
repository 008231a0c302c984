"""The compressed `.spz` export of a posed frame (gsply, the optional extra `export`): read back, it holds the `.ply`
export's Gaussians within SPZ's quantisation, in far fewer bytes; reenactment.py --export-spz writes it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.apps.export_ply import export_gaussians_ply, read_gaussians_ply
from viewer_avatar import build_tiny_avatar

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("gsply") is None,
                                reason="needs gsply (the optional extra 'export': pip install -e .[export])")


@pytest.fixture(scope="module")
def avatar(tmp_path_factory) -> Path:
    return build_tiny_avatar(tmp_path_factory.mktemp("spz") / "tiny.cgha")


def test_spz_holds_the_ply_export_within_its_quantisation(avatar, tmp_path):
    from cgha.apps.export_spz import SPZ_FRACTIONAL_BITS, export_gaussians_spz, read_gaussians_spz
    from cgha.compact.avatar_file import load_compact_avatar

    model, _, _ = load_compact_avatar(avatar, torch.device("cpu"))
    with torch.no_grad():
        gaussians = model.generate(torch.full((1, 16), 0.3), torch.tensor([[0.1, 0.2, 0.0, 0.01, 0.0, 0.02]]),
                                   torch.tensor([[0.125]]))
    ply = read_gaussians_ply(export_gaussians_ply(tmp_path / "frame.ply", gaussians))
    spz_path = export_gaussians_spz(tmp_path / "frame.spz", gaussians)
    spz = read_gaussians_spz(spz_path)

    xyz = np.stack([ply["x"], ply["y"], ply["z"]], axis=1)
    assert spz["means"].shape == xyz.shape
    assert np.abs(spz["means"] - xyz).max() <= 2.0 ** -SPZ_FRACTIONAL_BITS  # 24-bit fixed point
    sh0 = np.stack([ply[f"f_dc_{i}"] for i in range(3)], axis=1)
    assert np.abs(spz["sh0"] - sh0).max() < 0.05  # 8-bit colour
    log_scale = np.stack([ply[f"scale_{i}"] for i in range(3)], axis=1)
    assert np.abs(spz["scales"] - log_scale).max() < 0.05  # 8-bit log-scale, 1/16 steps
    alpha = 1.0 / (1.0 + np.exp(-ply["opacity"]))
    assert np.abs(1.0 / (1.0 + np.exp(-spz["opacities"])) - alpha).max() < 1.0 / 255 + 1e-3
    quats = np.stack([ply[f"rot_{i}"] for i in range(4)], axis=1)
    assert np.abs(np.abs((spz["quats"] * quats).sum(axis=1)) - 1.0).max() < 0.01  # same rotation (q or -q)
    assert spz_path.stat().st_size < (tmp_path / "frame.ply").stat().st_size / 4


def test_reenactment_py_writes_spz(avatar, tmp_path):
    result = subprocess.run(
        [sys.executable, "reenactment.py", "--config", "checkpoints/demo/reenactment.yaml", "--export-spz", "1",
         f"load_gaussianhead_checkpoint={avatar}", "device=cpu", "render.backend=torch",
         "dataset.param_files=params/000[0-2]/params.npz", "dataset.image_files=images/000[0-2]/image_cam00.jpg",
         "dataset.resolution=64", f"recorder.result_path={tmp_path}", "recorder.name=spz"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "spz" / "frame_000001.spz").is_file() and (tmp_path / "spz" / "spz.mp4").is_file()
    assert f"spz: {tmp_path / 'spz' / 'frame_000001.spz'}" in result.stdout

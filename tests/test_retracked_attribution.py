"""benchmarks/retracked_attribution.py: a hybrid subject takes exactly the named parts from the truth."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgha.module.mesh_head import pose_to_world, world_to_canonical
from cgha.preprocess.check import check_subject

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("retracked_attribution",
                                               ROOT / "benchmarks" / "retracked_attribution.py")
attribution = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attribution)


def _fake_tracking(subject: Path) -> None:
    """Turn a copy of the truth into a 'tracked' subject: other poses (points moved rigidly with them), other
    expression codes and empty masks."""
    rng = np.random.default_rng(0)
    for frame_dir in sorted((subject / "params").iterdir()):
        params = dict(np.load(frame_dir / "params.npz"))
        moved = dict(params, pose=params["pose"] + rng.normal(0, 0.05, params["pose"].shape).astype(np.float32),
                     scale=params["scale"] * 1.05, exp_coeff=params["exp_coeff"] + 0.3)
        for name in ("lmk_3d.npy", "vertices.npy"):
            points = torch.from_numpy(np.load(frame_dir / name)).double()[None]
            canonical = world_to_canonical(points, torch.from_numpy(params["pose"]).double().reshape(1, 6),
                                           torch.from_numpy(params["scale"]).double().reshape(1, 1))
            world = pose_to_world(canonical, torch.from_numpy(moved["pose"]).double().reshape(1, 6),
                                  torch.from_numpy(moved["scale"]).double().reshape(1, 1))
            np.save(frame_dir / name, world[0].numpy().astype(np.float32))
        np.savez(frame_dir / "params.npz", **moved)
    for mask in (subject / "images").glob("*/mask*.jpg"):
        Image.new("L", Image.open(mask).size, 0).save(mask)


def test_pose_swap_puts_the_fitted_points_where_the_truth_has_them(tiny_subject, broken, tmp_path):
    _fake_tracking(broken)
    hybrid = attribution.hybrid_subject(broken, tiny_subject, tmp_path / "hybrid", ["pose"])
    for frame_dir in sorted((hybrid / "params").iterdir()):
        truth_dir, tracked_dir = tiny_subject / "params" / frame_dir.name, broken / "params" / frame_dir.name
        params, truth, tracked = (np.load(d / "params.npz") for d in (frame_dir, truth_dir, tracked_dir))
        np.testing.assert_array_equal(params["pose"], truth["pose"])
        np.testing.assert_array_equal(params["scale"], truth["scale"])
        np.testing.assert_array_equal(params["exp_coeff"], tracked["exp_coeff"])
        for name in ("lmk_3d.npy", "vertices.npy"):  # the same face shape: back exactly where the truth has it
            np.testing.assert_allclose(np.load(frame_dir / name), np.load(truth_dir / name), atol=1e-5)
    mask = next((hybrid / "images").glob("*/mask_cam00.jpg"))
    assert mask.resolve() == (broken / "images" / mask.parent.name / mask.name).resolve()
    assert not check_subject(hybrid).problems  # a valid subject


def test_masks_and_expression_come_from_the_truth_images_from_the_tracked(tiny_subject, broken, tmp_path):
    _fake_tracking(broken)
    hybrid = attribution.hybrid_subject(broken, tiny_subject, tmp_path / "hybrid", ["masks", "expression"])
    for frame_dir in sorted((hybrid / "images").iterdir()):
        for image in frame_dir.iterdir():
            source = tiny_subject if image.name.startswith("mask") else broken
            assert image.resolve() == (source / "images" / frame_dir.name / image.name).resolve()
    frame = sorted((hybrid / "params").iterdir())[0].name
    params = np.load(hybrid / "params" / frame / "params.npz")
    truth = np.load(tiny_subject / "params" / frame / "params.npz")
    np.testing.assert_array_equal(params["exp_coeff"], truth["exp_coeff"])
    np.testing.assert_array_equal(params["pose"], np.load(broken / "params" / frame / "params.npz")["pose"])


def test_unknown_part_and_other_frames_are_refused(tiny_subject, broken, tmp_path):
    with pytest.raises(ValueError, match="unknown parts \\['lighting'\\]"):
        attribution.hybrid_subject(broken, tiny_subject, tmp_path / "a", ["lighting"])
    meta = broken / "meta.json"
    meta.write_text(meta.read_text().replace('"0000"', '"0100"', 1))
    with pytest.raises(ValueError, match="has frames"):
        attribution.hybrid_subject(broken, tiny_subject, tmp_path / "b", ["pose"])
    assert not (tmp_path / "b").exists()


def test_a_missing_truth_mask_is_named_and_nothing_is_written(tiny_subject, broken, tmp_path):
    missing = next((broken / "images").glob("*/mask_cam01.jpg"))
    missing.unlink()
    with pytest.raises(ValueError, match=f"{missing.parent.name}/mask_cam01.jpg is missing"):
        attribution.hybrid_subject(tiny_subject, broken, tmp_path / "c", ["masks"])
    assert [path.name for path in tmp_path.iterdir()] == [broken.name]  # no "c", no hidden partial copy

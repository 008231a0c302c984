"""benchmarks/restore_tracked_images.py: a tracked subject moved without its images gets back exactly the files
track.py wrote (the rig's JPEGs decoded and written again, and their low-res copies), and refuses a rig that does not
match the tracked masks."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cgha.preprocess.crop import resize_square
from cgha.preprocess.files import write_jpeg
from cgha.tracking import subject_writer as sw
from cgha.utils.image_io import read_rgb

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("restore_tracked_images",
                                               ROOT / "benchmarks" / "restore_tracked_images.py")
restore = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(restore)


def _rig_and_tracked(tmp_path: Path, side: int = 48, lowres: int = 16):
    rng = np.random.default_rng(0)
    rig, tracked = tmp_path / "rig", tmp_path / "tracked"
    for frame in ("0000", "0001"):
        for camera in ("cam00", "cam01"):
            (rig / "images" / frame).mkdir(parents=True, exist_ok=True)
            write_jpeg(rig / "images" / frame / f"image_{camera}.jpg",
                       rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
            # What track.py --crop full does with a view: the decoded rig image, written with its mask.
            image = read_rgb(rig / "images" / frame / f"image_{camera}.jpg")
            mask = np.zeros((side, side), np.uint8)
            mask[8:40, 10:30] = 255
            sw.write_view(tracked, frame, camera, image, mask, lowres, np.eye(3), np.eye(3, 4))
    (tracked / "meta.json").write_text(json.dumps({"lowres_resolution": lowres}))
    return rig, tracked


def test_restored_images_are_byte_identical_to_the_tracked_ones(tmp_path):
    rig, tracked = _rig_and_tracked(tmp_path)
    written = {p: p.read_bytes() for p in (tracked / "images").glob("*/image_*.jpg")}
    assert len(written) == 8  # 4 views x (image, low-res image)
    for path in written:
        path.unlink()
    assert restore.restore_images(rig, tracked) == 4
    assert {p: p.read_bytes() for p in (tracked / "images").glob("*/image_*.jpg")} == written
    assert read_rgb(tracked / "images" / "0001" / "image_lowres_cam01.jpg").shape == (16, 16, 3)


def test_a_rig_of_another_size_or_without_the_view_is_refused(tmp_path):
    rig, tracked = _rig_and_tracked(tmp_path)
    for path in (tracked / "images").glob("*/image_*.jpg"):
        path.unlink()
    write_jpeg(rig / "images" / "0001" / "image_cam00.jpg", resize_square(read_rgb(
        rig / "images" / "0001" / "image_cam00.jpg"), 32))
    with pytest.raises(SystemExit, match=r"image_cam00\.jpg: 32x32, but the tracked mask .*mask_cam00\.jpg is 48x48"):
        restore.restore_images(rig, tracked)
    assert not list((tracked / "images").glob("*/image_*.jpg"))  # nothing written before the check failed
    (rig / "images" / "0001" / "image_cam00.jpg").unlink()
    with pytest.raises(SystemExit, match=r"0001/image_cam00\.jpg: missing"):
        restore.restore_images(rig, tracked)


def test_a_folder_that_is_not_a_tracked_subject_is_refused(tmp_path):
    rig, tracked = _rig_and_tracked(tmp_path)
    (tracked / "meta.json").write_text(json.dumps({"resolution": 48}))
    with pytest.raises(SystemExit, match=r"meta\.json: no 'lowres_resolution' \(not a subject written by track\.py\)"):
        restore.restore_images(rig, tracked)
    (tracked / "meta.json").write_text(json.dumps({"lowres_resolution": 16}))
    for path in (tracked / "images").glob("*/mask_*.jpg"):
        path.unlink()
    with pytest.raises(SystemExit, match=r"images: no masks to restore images for"):
        restore.restore_images(rig, tracked)

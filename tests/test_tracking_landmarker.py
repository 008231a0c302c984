"""The landmarker (MediaPipe face mesh -> iBUG-68) and person segmentation on frames of the synthetic generator.

Tolerances are measured (cgha/tracking/landmarker.py, 256^2 and 512^2 renders of identities 0-2): mean error per
iBUG group relative to the inter-ocular distance (outer eye corners, IOD ~70 px at 256^2) on frontal views was at
most jaw 0.08, brows 0.10, nose 0.06, eyes 0.03, outer lips 0.04, inner lips 0.04 over neutral, talking, smiling,
blinking and brow-raising faces; the bounds below are ~1.5x that. Brows, jaw and nose carry the systematic offsets
between MediaPipe's mesh and the synthetic head's landmark definitions; eyes and lips are tight.
"""
from __future__ import annotations

import importlib.util
import math
import sys

import cv2
import numpy as np
import pytest
import torch

from cgha.synthetic import DEFAULT_SCALE, HeadModel, HeadTexture, frontal_camera, render_views
from cgha.synthetic.background import camera_backgrounds
from cgha.synthetic.trajectory import euler_to_matrix
from cgha.tracking.landmarker import (IBUG68_FROM_MEDIAPIPE, IBUG68_GROUPS, INSTALL_HINT, NUM_POINTS,
                                      detect_landmarks, import_mediapipe)
from cgha.utils.cameras import project_points
from cgha.utils.rotations import matrix_to_axis_angle

needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason=f"mediapipe is not installed; install it with: {INSTALL_HINT}")

RES = 256
FRONTAL_TOLERANCE_IOD = {"jaw": 0.12, "brows": 0.15, "nose": 0.09, "eyes": 0.05, "outer_lips": 0.06,
                         "inner_lips": 0.065}
TALK = {"jaw_open": 0.6, "smile": 0.4}


def _render(head: HeadModel, texture: HeadTexture, yaw_deg: float = 0.0, **expression):
    """One frame from the straight-ahead camera: (uint8 RGB [RES, RES, 3], iBUG-68 pixels [68, 2], mask [RES, RES])."""
    viewmat, K = frontal_camera(RES)
    R = euler_to_matrix(math.radians(yaw_deg), 0.0, 0.0)
    pose = torch.cat([matrix_to_axis_angle(R).float(), torch.zeros(3)])
    out = render_views(head, texture, head.expression(**expression), pose, DEFAULT_SCALE, viewmat, K, RES, RES,
                       camera_backgrounds(1, RES, RES))
    uv, _ = project_points(out["landmarks"][None], viewmat, K)
    image = (out["image"][0].permute(1, 2, 0) * 255.0 + 0.5).to(torch.uint8).numpy()
    return image, uv[0].numpy(), out["mask"][0, 0].numpy() > 0.5


@pytest.fixture(scope="module")
def frames():
    """Identity 0: neutral frontal, talking frontal, and talking with the head turned 40 degrees either way."""
    head = HeadModel(0)
    texture = HeadTexture(head.params, head.layout)
    return {"frontal": _render(head, texture), "talking": _render(head, texture, **TALK),
            "yaw+40": _render(head, texture, 40.0, **TALK), "yaw-40": _render(head, texture, -40.0, **TALK)}


def _iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[36] - points[45]))


def _group_errors(detected: np.ndarray, truth: np.ndarray, scale: float) -> dict[str, float]:
    error = np.linalg.norm(detected - truth, axis=-1) / scale
    return {group: float(error[index].mean()) for group, index in IBUG68_GROUPS.items()}


def test_mapping_table_is_a_valid_ibug68_selection():
    assert IBUG68_FROM_MEDIAPIPE.shape == (68,) and IBUG68_FROM_MEDIAPIPE.dtype == np.int64
    assert len(set(IBUG68_FROM_MEDIAPIPE.tolist())) == 68
    assert IBUG68_FROM_MEDIAPIPE.min() >= 0 and IBUG68_FROM_MEDIAPIPE.max() < NUM_POINTS
    covered = sorted(i for index in IBUG68_GROUPS.values() for i in range(68)[index])
    assert covered == list(range(68))


def test_missing_mediapipe_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(ImportError, match="pip install --no-deps mediapipe==0.10.14"):
        import_mediapipe()


@needs_mediapipe
def test_frontal_landmarks_match_ground_truth(frames):
    images = [frames["frontal"][0], frames["talking"][0]]
    result = detect_landmarks(np.stack(images))
    assert len(result) == 2 and result.found.all() and (result.score > 0.5).all()
    assert result.points_478.shape == (2, NUM_POINTS, 2) and result.points_478.dtype == np.float32
    assert result.ibug68.shape == (2, 68, 2)
    np.testing.assert_array_equal(result.ibug68, result.points_478[:, IBUG68_FROM_MEDIAPIPE])
    np.testing.assert_array_equal(result.image_sizes, [[RES, RES], [RES, RES]])
    iod = _iod(frames["frontal"][1])
    for name, detected in zip(("frontal", "talking"), result.ibug68):
        errors = _group_errors(detected, frames[name][1], iod)
        for group, tolerance in FRONTAL_TOLERANCE_IOD.items():
            assert errors[group] < tolerance, (name, group, errors)
    # The detected mouth opens with the synthetic jaw (inner-lip gap, points 62 and 66), as far as the truth does.
    gap = lambda points: float(np.linalg.norm(points[66] - points[62])) / iod  # noqa: E731
    truth_gap, detected_gap = gap(frames["talking"][1]), gap(result.ibug68[1])
    assert truth_gap > 0.1 and abs(detected_gap - truth_gap) < 0.07, (truth_gap, detected_gap)
    assert gap(result.ibug68[0]) < 0.05


@needs_mediapipe
def test_turned_head_is_found_and_eyes_and_lips_stay_close(frames):
    result = detect_landmarks([frames["yaw+40"][0], frames["yaw-40"][0]])
    assert result.found.all()
    iod = _iod(frames["frontal"][1])
    for name, detected in zip(("yaw+40", "yaw-40"), result.ibug68):
        errors = _group_errors(detected, frames[name][1], iod)
        # Measured at +-40 degrees: eyes <= 0.06, lips <= 0.05, jaw <= 0.16 (the far side of the jaw line is a
        # silhouette in the image, a fixed mesh contour for MediaPipe).
        assert errors["eyes"] < 0.09 and errors["outer_lips"] < 0.08 and errors["inner_lips"] < 0.08, (name, errors)
        assert errors["jaw"] < 0.24, (name, errors)


@needs_mediapipe
def test_no_face_is_reported_and_small_images_are_upscaled(frames):
    face = frames["talking"][0]
    half = cv2.resize(face, (RES // 2, RES // 2), interpolation=cv2.INTER_AREA)
    blank = np.full((100, 140, 3), 128, dtype=np.uint8)
    result = detect_landmarks([face, blank, half, np.zeros((64, 64, 3), np.uint8)])
    np.testing.assert_array_equal(result.found, [True, False, True, False])
    np.testing.assert_array_equal(result.image_sizes, [[RES, RES], [100, 140], [RES // 2, RES // 2], [64, 64]])
    assert np.isnan(result.points_478[[1, 3]]).all() and np.isnan(result.ibug68[[1, 3]]).all()
    np.testing.assert_array_equal(result.score[[1, 3]], [0.0, 0.0])
    # The half-size copy (upscaled to 256 inside) lands on the same face, in its own pixels.
    iod = _iod(frames["talking"][1])
    shift = np.linalg.norm(2.0 * result.points_478[2] - result.points_478[0], axis=-1).mean() / iod
    assert shift < 0.03, shift
    empty = detect_landmarks([])
    assert len(empty) == 0 and empty.points_478.shape == (0, NUM_POINTS, 2)


@needs_mediapipe
@pytest.mark.parametrize("images, message", [
    (np.zeros((2, RES, RES, 3), np.float32), r"\[N, H, W, 3\] uint8 RGB, got shape \(2, 256, 256, 3\) dtype float32"),
    (np.zeros((RES, RES, 3), np.uint8), r"got one image of shape \(256, 256, 3\) \(wrap it: images\[None\]\)"),
    (np.zeros((2, 3, RES, RES), np.uint8), r"got shape \(2, 3, 256, 256\)"),
    ([np.zeros((RES, RES), np.uint8)], r"image 0: expected \[H, W, 3\] uint8 RGB, got shape \(256, 256\)"),
    ([np.zeros((RES, RES, 3), np.uint8), np.zeros((RES, RES, 4), np.uint8)], r"image 1: .*shape \(256, 256, 4\)"),
    ([np.zeros((RES, RES, 3), np.uint16)], r"image 0: .*dtype uint16"),
    ([np.zeros((8, 40, 3), np.uint8)], r"image 0: 40x8 is too small"),
    ("frame.jpg", r"got str"),
])
def test_bad_inputs_raise_clear_errors(images, message):
    with pytest.raises(ValueError, match=message):
        detect_landmarks(images)


@needs_mediapipe
def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"min_detection_confidence must be in \[0, 1\], got 1.5"):
        detect_landmarks(np.zeros((1, RES, RES, 3), np.uint8), min_detection_confidence=1.5)
    with pytest.raises(ValueError, match=r"min_side must be an integer >= 0 \(0: never upscale\), got -1"):
        detect_landmarks(np.zeros((1, RES, RES, 3), np.uint8), min_side=-1)


@needs_mediapipe
def test_segmentation_matches_the_render_masks(frames):
    from cgha.tracking.segmentation import PersonSegmenter, segment

    names = ("frontal", "talking", "yaw+40", "yaw-40")
    blank = np.full((RES, RES, 3), 90, dtype=np.uint8)
    masks = segment(np.stack([frames[name][0] for name in names] + [blank]))
    assert masks.shape == (5, RES, RES) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    for name, mask in zip(names, masks > 0.5):
        truth = frames[name][2]
        # MediaPipe segments a person: under the synthetic head's neck stub it adds shoulders that are not there,
        # so the tight comparison stops at the bottom row of the true mask. Measured: >= 0.97 there for these
        # views (0.91 at worst over 42 views, head tilted back), 0.62-0.98 over the whole image.
        bottom = int(np.nonzero(truth.any(axis=1))[0].max()) + 1
        top_iou = (mask[:bottom] & truth[:bottom]).sum() / (mask[:bottom] | truth[:bottom]).sum()
        whole_iou = (mask & truth).sum() / (mask | truth).sum()
        assert top_iou > 0.95 and whole_iou > 0.55, (name, top_iou, whole_iou)
    assert masks[4].mean() < 0.01  # nobody in a blank image
    with PersonSegmenter() as segmenter:
        np.testing.assert_allclose(segmenter.segment(frames["frontal"][0]), masks[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"image 1: 128x128 differs from image 0's 256x256"):
        segment([frames["frontal"][0], np.zeros((128, 128, 3), np.uint8)])
    with pytest.raises(ValueError, match="model_selection must be 0"):
        PersonSegmenter(model_selection=2)

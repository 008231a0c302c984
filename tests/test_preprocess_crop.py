"""Square crop + resize of raw frames and the intrinsics update, checked by projecting known 3D points."""
import numpy as np
import pytest

from cgha.preprocess.crop import (SquareCrop, centred_square_crop, crop_image, crop_resize, crop_resize_intrinsics,
                                 visible_mask)
from cgha.preprocess.plan import plan_frames


def _project(K, world_2_cam, points):
    cam = points @ world_2_cam[:3, :3].T + world_2_cam[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:]


def _look_at_origin(distance=1.2):
    world_2_cam = np.eye(4)
    world_2_cam[2, 3] = distance  # camera on -z looking down +z at the origin
    return world_2_cam


def test_gha_crop_is_the_centred_square():
    # GHA crops NeRSemble's 2200 x 3208 frames at corner (-200, 304) with side 2600: the centred square.
    assert centred_square_crop(2200, 3208, 2600) == SquareCrop(-200, 304, 2600)
    assert centred_square_crop(2200, 3208) == SquareCrop(0, 504, 2200)
    assert centred_square_crop(2200, 3208, 2600, offset=(10, -4)) == SquareCrop(-190, 300, 2600)


@pytest.mark.parametrize("width, height, side, offset, size", [
    (2200, 3208, 2600, (0, 0), 2048),   # GHA's setting: padded left/right, shrunk
    (2200, 3208, None, (0, 0), 512),    # default: the shorter side
    (640, 480, 300, (37, -20), 900),    # off-centre, enlarged
])
def test_intrinsics_follow_the_pixels(width, height, side, offset, size):
    """A 3D point lands on the same image content before and after crop + resize."""
    K = np.array([[1800.0, 0.0, width / 2 + 7.5], [0.0, 1790.0, height / 2 - 3.25], [0.0, 0.0, 1.0]])
    crop = centred_square_crop(width, height, side, offset)
    K_out = crop_resize_intrinsics(K, crop, size)
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.15, 0.15, (50, 3))
    world_2_cam = _look_at_origin()
    raw_uv = _project(K, world_2_cam, points)
    out_uv = _project(K_out, world_2_cam, points)
    # Continuous pixel coordinates: out = (raw - corner) * size / side (pixel u covers [u, u + 1)).
    expected = (raw_uv - [crop.x0, crop.y0]) * size / crop.side
    np.testing.assert_allclose(out_uv, expected, rtol=0, atol=1e-9)
    assert K_out[2].tolist() == [0.0, 0.0, 1.0]


def test_projected_dot_stays_on_the_image_content():
    """Draw a dot at a projected point in a raw frame; after crop + resize it sits where K_out projects the point."""
    width, height, side, size = 300, 440, 360, 180
    K = np.array([[400.0, 0.0, width / 2], [0.0, 400.0, height / 2], [0.0, 0.0, 1.0]])
    point = np.array([[0.05, -0.08, 0.1]])
    world_2_cam = _look_at_origin()
    u, v = _project(K, world_2_cam, point)[0]
    yy, xx = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    frame = (np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 4.0 ** 2)) * 255).astype(np.float32)
    crop = centred_square_crop(width, height, side)
    out = crop_resize(frame, crop, size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    centroid = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, _project(crop_resize_intrinsics(K, crop, size), world_2_cam, point)[0],
                               atol=0.05)


def test_crop_pads_with_black_and_marks_visibility():
    image = np.full((6, 4, 3), 200, dtype=np.uint8)
    crop = centred_square_crop(4, 6, 6)  # wider than the frame: one black column on each side
    out = crop_image(image, crop)
    assert out.shape == (6, 6, 3)
    assert (out[:, 0] == 0).all() and (out[:, -1] == 0).all() and (out[:, 1:-1] == 200).all()
    visible = visible_mask(4, 6, crop, 6)
    assert (visible[:, 0] == 0).all() and (visible[:, 1:-1] == 255).all()
    inside = crop_image(image, centred_square_crop(4, 6))
    assert inside.shape == (4, 4, 3) and np.shares_memory(inside, image)  # no padding: a view, no copy


def test_frame_plan_numbers_frames_across_sequences():
    plan = plan_frames([("EXP-1-head", 7), ("EMO-1", 4)], stride=3)
    assert [(s.frame, s.sequence, s.index) for s in plan] == [
        ("0000", "EXP-1-head", 0), ("0001", "EXP-1-head", 3), ("0002", "EXP-1-head", 6),
        ("0003", "EMO-1", 0), ("0004", "EMO-1", 3)]
    assert [s.index for s in plan_frames([("A", 10)], stride=2, max_frames=3)] == [0, 2, 4]
    assert plan_frames([("A", 12000)])[-1].frame == "11999"
    assert plan_frames([("A", 10001)])[-1].frame == "10000" and plan_frames([("A", 10001)])[0].frame == "00000"

"""The viewer without a browser: frames from the avatar's own pipeline follow the expression sliders, the head-pose
controls and the camera; the browser camera's conversion; driver playback state; and view.py's one-line errors for a
missing or corrupt avatar and a port in use. tests/test_viewer_browser.py drives it in headless Chromium."""
from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.apps.driver_video import DriverVideoOptions
from cgha.apps.viewer.avatar_source import open_avatar
from cgha.apps.viewer.camera import FRONTAL_DISTANCE_PER_SCALE, ViewCamera, look_at_camera, start_view
from cgha.apps.viewer.motion import avatar_reference, expression_names, load_driver, neutral_inputs, turned_pose
from cgha.apps.viewer.renderer import FrameRenderer
from cgha.apps.viewer.server import AvatarViewer, ViewerOptions
from cgha.errors import CheckpointError
from cgha.synthetic.expression import EXPRESSION_NAMES
from cgha.utils.cameras import look_at_world_to_camera, project_points
from viewer_avatar import REFERENCE_SCALE, build_tiny_avatar

ROOT = Path(__file__).resolve().parents[1]
DEMO_DRIVER = ROOT / "checkpoints" / "demo" / "driver_id1"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory) -> Path:
    return build_tiny_avatar(tmp_path_factory.mktemp("viewer") / "tiny.cgha")


def _covered(image: np.ndarray) -> np.ndarray:
    """Pixels that are not the white background: bool [H, W]."""
    return image.astype(np.int32).min(axis=2) < 235


def test_frames_follow_expression_pose_and_camera(avatar_file):
    avatar = open_avatar(avatar_file, CPU)
    reference = avatar_reference(avatar)
    renderer = FrameRenderer(avatar, CPU, backend="torch")
    camera = look_at_camera(start_view(reference.pose.tolist(), reference.scale))
    expression, pose, scale = neutral_inputs(avatar, reference)
    neutral = renderer.render(expression, pose, scale, camera, 64, 96).image
    assert neutral.shape == (64, 96, 3) and neutral.dtype == np.uint8  # the window's aspect, not a square
    covered = _covered(neutral)
    assert 0.1 < covered.mean() < 0.9  # a head in front of the white background, not a blank or full frame
    rows, cols = np.nonzero(covered)
    assert abs(rows.mean() - 32) < 6 and abs(cols.mean() - 48) < 6  # the start view looks at the head

    jaw = expression.clone()
    jaw[EXPRESSION_NAMES.index("jaw_open")] = 1.0
    opened = renderer.render(jaw, pose, scale, camera, 64, 96).image
    assert np.abs(opened.astype(int) - neutral).mean() > 0.5
    turned = renderer.render(expression, turned_pose(pose, 40.0, 0.0, 0.0), scale, camera, 64, 96).image
    assert np.abs(turned.astype(int) - neutral).mean() > 0.5
    # The same frame from a camera moved to the right of the head: the head moves left in the image.
    moved = ViewCamera(camera.wxyz, (camera.position[0] + 0.1, camera.position[1], camera.position[2]), camera.fov_y)
    shifted = renderer.render(expression, pose, scale, moved, 64, 96).image
    assert np.nonzero(_covered(shifted))[1].mean() < cols.mean() - 5
    assert expression_names(avatar) == list(EXPRESSION_NAMES)



def test_camera_only_frames_reuse_the_posed_gaussians(avatar_file):
    """Orbiting skips the generate step, and what it shows is what a fresh renderer draws; any other input change
    (here the jaw, then the scale) generates again."""
    avatar = open_avatar(avatar_file, CPU)
    reference = avatar_reference(avatar)
    renderer = FrameRenderer(avatar, CPU, backend="torch")
    camera = look_at_camera(start_view(reference.pose.tolist(), reference.scale))
    expression, pose, scale = neutral_inputs(avatar, reference)
    assert renderer.render(expression, pose, scale, camera, 64, 96).generated
    moved = ViewCamera(camera.wxyz, (camera.position[0] + 0.1, camera.position[1], camera.position[2]), camera.fov_y)
    reused = renderer.render(expression.clone(), pose.clone(), scale.clone(), moved, 64, 96)
    assert not reused.generated
    fresh = FrameRenderer(avatar, CPU, backend="torch").render(expression, pose, scale, moved, 64, 96)
    assert fresh.generated and np.array_equal(reused.image, fresh.image)
    jaw = expression.clone()
    jaw[EXPRESSION_NAMES.index("jaw_open")] = 1.0
    opened = renderer.render(jaw, pose, scale, moved, 64, 96)
    assert opened.generated and not np.array_equal(opened.image, reused.image)
    assert renderer.render(jaw, pose, scale * 1.1, moved, 64, 96).generated

def test_browser_camera_conversion_and_start_view():
    yaw = math.radians(90.0)
    view = start_view([0.0, yaw, 0.0, 0.1, 0.2, 0.3], 0.2)
    # The face's +z, turned 90 deg about y, points along +x: the camera sits there, at 10 x the head's scale.
    assert np.allclose(view.position, [0.1 + FRONTAL_DISTANCE_PER_SCALE * 0.2, 0.2, 0.3], atol=1e-6)
    camera = look_at_camera(view)
    expected = look_at_world_to_camera(view.position, view.look_at, view.up)
    assert torch.allclose(camera.viewmat().double(), torch.as_tensor(expected), atol=1e-5)
    K = camera.intrinsics(100, 150)
    assert math.isclose(K[1, 1].item(), 50.0 / math.tan(view.fov_y / 2), rel_tol=1e-6) and K[0, 2] == 75.0
    centre = project_points(torch.tensor([[0.1, 0.2, 0.3]]), camera.viewmat(), K)[0]
    assert torch.allclose(centre, torch.tensor([[75.0, 50.0]]), atol=1e-3)


def test_turned_pose_turns_in_place():
    pose = torch.tensor([0.0, 0.0, 0.0, 0.5, -0.2, 0.1])
    turned = turned_pose(pose, yaw=90.0, pitch=0.0, roll=0.0)
    assert torch.allclose(turned[3:], pose[3:])
    assert torch.allclose(turned[:3], torch.tensor([0.0, math.pi / 2, 0.0]), atol=1e-5)


def test_viewer_state_plays_the_driver_relative_to_the_avatar(avatar_file):
    avatar = open_avatar(avatar_file, CPU)
    driver = load_driver(DEMO_DRIVER, avatar, DriverVideoOptions(device="cpu"))
    assert len(driver) == 40 and driver.root == DEMO_DRIVER
    # Relative transfer: frame 0 sits at the avatar's own neutral pose and scale, whatever the driver's.
    assert torch.allclose(driver.pose[0], avatar_reference(avatar).pose, atol=1e-6)
    assert torch.allclose(driver.scale, torch.full_like(driver.scale, REFERENCE_SCALE))
    viewer = AvatarViewer(FrameRenderer(avatar, CPU, "torch"), expression_names(avatar), avatar_reference(avatar),
                          driver, ViewerOptions(port=0, resolution=64), "cpu")
    viewer.show_frame(7)
    expression, pose, scale = viewer.inputs()
    assert torch.equal(expression, driver.expression[7]) and torch.allclose(pose, driver.pose[7], atol=1e-6)
    viewer.set_expression("smile", 0.9)
    assert viewer.inputs()[0][EXPRESSION_NAMES.index("smile")] == pytest.approx(0.9)
    with pytest.raises(KeyError, match="no expression coefficient 'grin'; the avatar has: jaw_open, smile"):
        viewer.set_expression("grin", 1.0)


def test_avatar_paths_are_checked(avatar_file, tmp_path):
    with pytest.raises(CheckpointError, match="avatar not found: .*nowhere.cgha"):
        open_avatar(tmp_path / "nowhere.cgha", CPU)
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="folder without config.yaml"):
        open_avatar(tmp_path / "run", CPU)
    image = tmp_path / "face.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match="face.png is a PNG image, not an avatar"):
        open_avatar(image, CPU)


def _view(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "view.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_view_py_one_line_errors(avatar_file, tmp_path):
    corrupt = tmp_path / "corrupt.cgha"
    corrupt.write_bytes(avatar_file.read_bytes()[:5000])  # truncated: the header announces more
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {"missing": (_view(str(tmp_path / "missing.cgha"), "--port", "0"), "avatar not found"),
                 "corrupt": (_view(str(corrupt), "--port", "0", "--device", "cpu"), "corrupt.cgha is truncated"),
                 "port": (_view(str(avatar_file), "--port", str(port)), f"port {port} on 127.0.0.1 is in use")}
    for name, (result, expected) in cases.items():
        assert result.returncode == 2, (name, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last and "Traceback" not in result.stderr, (name, last)


def test_the_shipped_avatar_works_after_cloning():
    """checkpoints/demo/avatar.cgha loads with its subject record, accepts the shipped driver and renders a head."""
    avatar = open_avatar(ROOT / "checkpoints" / "demo" / "avatar.cgha", CPU)
    assert avatar.source["total_bytes"] < 4e6 and avatar.model.num_gaussians > 100_000
    driver = load_driver(DEMO_DRIVER, avatar, DriverVideoOptions(device="cpu"))
    camera = look_at_camera(start_view(avatar_reference(avatar).pose.tolist(), avatar_reference(avatar).scale))
    frame = FrameRenderer(avatar, CPU, "torch").render(driver.expression[5], driver.pose[5], driver.scale[5], camera,
                                                         64, 64).image
    assert 0.2 < _covered(frame).mean() < 0.95

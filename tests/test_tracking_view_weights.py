"""Landmark weights by view angle (cgha/tracking/view_weights.py): the angle between the head's frontal direction
and each camera, and the inverse-variance weights the multi-view fit applies from it."""
import math

import numpy as np
import pytest
import torch

from cgha.tracking.view_weights import oblique_view_weights, view_angles_deg
from cgha.utils.cameras import look_at_world_to_camera


def _viewmats(eyes, target=(0.0, 0.0, 0.0)):
    return np.stack([np.asarray(look_at_world_to_camera(torch.tensor(eye, dtype=torch.float64),
                                                        torch.tensor(target, dtype=torch.float64)))
                     for eye in eyes])


def test_angles_follow_the_head_rotation_and_position():
    eyes = [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 1.0)]
    viewmats = _viewmats(eyes)
    still = np.zeros((1, 6))
    np.testing.assert_allclose(view_angles_deg(still, viewmats)[0], [0.0, 90.0, 180.0, 45.0], atol=1e-6)
    yawed = np.array([[0.0, math.radians(30.0), 0.0, 0.0, 0.0, 0.0]])  # the face turns toward +x
    np.testing.assert_allclose(view_angles_deg(yawed, viewmats)[0, :2], [30.0, 60.0], atol=1e-6)
    # A head moved next to the second camera sees the first one at 45° (from (1, 0, 0.01)'s side), not 0°.
    moved = np.array([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    assert view_angles_deg(moved, viewmats)[0, 0] == pytest.approx(45.0, abs=1e-6)


def test_weights_are_the_inverse_variance_of_the_error_model():
    angles = np.array([0.0, 17.5, 35.0, 70.0])
    np.testing.assert_allclose(oblique_view_weights(angles, 35.0), [1.0, 1 / 1.25 ** 2, 0.25, 1 / 25], rtol=1e-12)
    assert np.all(np.diff(oblique_view_weights(np.linspace(0, 180, 19), 20.0)) < 0)


@pytest.mark.parametrize("half_weight", [0.0, -5.0, float("nan")])
def test_bad_half_weight_angle_is_refused(half_weight):
    with pytest.raises(ValueError, match="half_weight_deg"):
        oblique_view_weights(np.zeros(3), half_weight)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"pose \[T, 6\]"):
        view_angles_deg(np.zeros((2, 3)), np.tile(np.eye(4), (2, 1, 1)))

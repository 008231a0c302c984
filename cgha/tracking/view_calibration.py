"""View-dependent landmark calibration: where MediaPipe puts a landmark depends on the direction it sees the face
from, not only on the landmark (``calibration.py`` has the fixed, view-independent part).

The offset of landmark l seen from the unit direction d (from the head to the camera, in the head's frame: x toward
the subject's left, y up, z out of the face) is o_l(d) = sum_k phi_k(d) B_lk with features
phi(d) = (1, d_x, d_y, d_x^2, d_y^2, d_x d_y): the constant term is the fixed calibration, the others how it turns
with the view. The fit applies it as a correction of the detections: after a first fit, each detection is moved by
the pixel shift between o_l(d) and the fixed offset, projected with the fitted head, and the fit runs again.
"""
from __future__ import annotations

import numpy as np
import torch

from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix

NUM_FEATURES = 6


def camera_centres(viewmats: np.ndarray) -> np.ndarray:
    """Camera centres [..., 3] (world) of world-to-camera matrices [..., 4, 4]."""
    viewmats = np.asarray(viewmats, dtype=np.float64)
    return -np.einsum("...ji,...j->...i", viewmats[..., :3, :3], viewmats[..., :3, 3])


def directions_in_head_frame(pose: np.ndarray, eyes: np.ndarray) -> np.ndarray:
    """Unit directions [..., 3] from heads at ``pose`` [..., 6] (axis-angle + translation, world = R @ x + t) to
    points ``eyes`` [..., 3] (world), in the heads' frames; the leading shapes broadcast."""
    pose = np.asarray(pose, dtype=np.float64)
    R = axis_angle_to_matrix(torch.from_numpy(np.ascontiguousarray(pose[..., :3]))).numpy()  # head -> world
    d = np.einsum("...ji,...j->...i", R, np.asarray(eyes, dtype=np.float64) - pose[..., 3:])
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)


def head_directions(pose: np.ndarray, viewmats: np.ndarray) -> np.ndarray:
    """Unit direction [T, C, 3] from each frame's head to each camera, in the head's frame.

    Args:
        pose: [T, 6] axis-angle + translation (world = R @ x + t).
        viewmats: [C, 4, 4] world-to-camera.
    """
    pose = np.asarray(pose, dtype=np.float64)
    viewmats = np.asarray(viewmats, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] != 6 or viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"need pose [T, 6] and viewmats [C, 4, 4], got {pose.shape} and {viewmats.shape}")
    return directions_in_head_frame(pose[:, None, :], camera_centres(viewmats)[None, :, :])


def view_features(directions: np.ndarray) -> np.ndarray:
    """phi(d) [..., 6] of unit directions [..., 3]: (1, x, y, x^2, y^2, x y)."""
    x, y = directions[..., 0], directions[..., 1]
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def detection_shift_px(model, pose, scale, exp, world_landmarks, Ks, viewmats, coefficients, base_offset):
    """Pixel shift [T, C, 68, 2] of each landmark's projection between the view-dependent offset and the fixed one,
    at the fitted head: subtracting it from the detections moves them to where the fixed calibration expects them.

    Args:
        model: the face model (``landmark_offset_jacobian``).
        pose: [T, 6]; scale: scalar; exp: [T, 16]; world_landmarks: [T, 68, 3] the fitted (calibrated) landmarks.
        Ks: [C, 3, 3] and viewmats [C, 4, 4] of the fitted images.
        coefficients: [68, 6, 3] B of the view-dependent offset; base_offset: [68, 3] the fixed offset the fit uses.
    """
    dtype = torch.float64
    pose = np.asarray(pose, dtype=np.float64)
    V = torch.as_tensor(np.asarray(viewmats), dtype=dtype)
    K = torch.as_tensor(np.asarray(Ks), dtype=dtype)
    phi = torch.from_numpy(view_features(head_directions(pose, viewmats)))  # [T, C, 6]
    B = torch.as_tensor(np.asarray(coefficients), dtype=dtype)
    delta = torch.einsum("tck,lkj->tclj", phi, B) - torch.as_tensor(np.asarray(base_offset), dtype=dtype)
    Jx = model.landmark_offset_jacobian(torch.as_tensor(np.asarray(exp), dtype=model.dtype)).to("cpu", dtype)
    R = axis_angle_to_matrix(torch.from_numpy(pose[:, :3]))  # [T, 3, 3]
    world_delta = float(scale) * torch.einsum("tij,tclj->tcli", R, torch.einsum("tlij,tclj->tcli", Jx, delta))
    world = torch.as_tensor(np.asarray(world_landmarks), dtype=dtype)[:, None]  # [T, 1, 68, 3]
    before, _ = project_points(world.expand_as(world_delta), V, K)  # viewmats and Ks broadcast over the frames
    after, _ = project_points(world + world_delta, V, K)
    return (after - before).numpy()

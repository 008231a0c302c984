"""Generic pinhole-camera helpers (OpenCV axes, see docs/conventions.md).

- ``viewmat`` is a ``[..., 4, 4]`` world-to-camera matrix with x right, y down, z forward (into the scene);
  the dataset's ``extrinsic`` is its top ``[..., 3, 4]``.
- ``K`` is ``[..., 3, 3]`` in pixels of the image it is used with; pixel ``(u, v)`` covers ``[u, u+1) x [v, v+1)``,
  so the principal point of a centred camera is exactly ``(W / 2, H / 2)``.

Every function accepts torch tensors or numpy arrays (and returns the same kind); torch inputs keep their
dtype and device, numpy inputs are computed in float64 and returned as float64 unless a float32 array came in.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "look_at_world_to_camera",
    "intrinsics_from_fov",
    "intrinsics_from_focal",
    "scale_intrinsics",
    "project_points",
    "world_to_camera",
    "camera_center",
    "extrinsic_to_viewmat",
]


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if like is None else x.to(dtype=like.dtype, device=like.device)
    arr = np.asarray(x, dtype=np.float64)
    t = torch.from_numpy(arr)
    return t if like is None else t.to(dtype=like.dtype, device=like.device)


def _result_kind(*xs):
    """(is_numpy, numpy dtype) of the call: numpy when no argument is a tensor."""
    if any(isinstance(x, torch.Tensor) for x in xs):
        return False, None
    dtypes = [np.asarray(x).dtype for x in xs]
    out = np.float32 if dtypes and all(d == np.float32 for d in dtypes) else np.float64
    return True, out


def _back(t: torch.Tensor, is_numpy: bool, dtype):
    return t.detach().cpu().numpy().astype(dtype) if is_numpy else t


def look_at_world_to_camera(eye, target, up=(0.0, 1.0, 0.0)):
    """World-to-camera matrix of a camera at ``eye`` looking at ``target``.

    Args:
        eye: [..., 3] camera centre (world).
        target: [..., 3] point the optical axis passes through.
        up: [..., 3] world direction that appears *up* in the image (so image y, which points down, is roughly
            ``-up``). Must not be parallel to ``target - eye``.
    Returns:
        [..., 4, 4] viewmat: rows 0..2 of the rotation are the camera x (right), y (down), z (forward) axes in
        world coordinates, translation ``-R @ eye``.
    """
    is_np, dt = _result_kind(eye, target, up)
    eye_t = _as_tensor(eye)
    if not eye_t.is_floating_point():
        eye_t = eye_t.double()
    target_t = _as_tensor(target, eye_t)
    up_t = _as_tensor(up, eye_t)
    eye_t, target_t, up_t = torch.broadcast_tensors(eye_t, target_t, up_t)
    if eye_t.shape[-1] != 3:
        raise ValueError(f"eye/target/up must be [..., 3], got {tuple(eye_t.shape)}")
    z = target_t - eye_t
    z = z / z.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    x = torch.linalg.cross(z, up_t)
    x_norm = x.norm(dim=-1, keepdim=True)
    if bool((x_norm < 1e-9).any()):
        raise ValueError("look_at: up vector is parallel to the viewing direction")
    x = x / x_norm
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-2)  # [..., 3, 3]
    t = -(R @ eye_t[..., None])[..., 0]
    view = torch.zeros(eye_t.shape[:-1] + (4, 4), dtype=eye_t.dtype, device=eye_t.device)
    view[..., :3, :3] = R
    view[..., :3, 3] = t
    view[..., 3, 3] = 1.0
    return _back(view, is_np, dt)


def intrinsics_from_focal(focal, width: int, height: int, dtype=torch.float32, device="cpu"):
    """Centred pinhole intrinsics ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` as a [3, 3] tensor (pixels)."""
    K = torch.zeros(3, 3, dtype=dtype, device=device)
    K[0, 0] = float(focal)
    K[1, 1] = float(focal)
    K[0, 2] = width / 2.0
    K[1, 2] = height / 2.0
    K[2, 2] = 1.0
    return K


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int, dtype=torch.float32, device="cpu"):
    """Centred pinhole intrinsics [3, 3] (square pixels) whose vertical field of view is ``fov_y_deg`` degrees."""
    if not 0.0 < fov_y_deg < 180.0:
        raise ValueError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return intrinsics_from_focal(focal, width, height, dtype=dtype, device=device)


def scale_intrinsics(K, scale: float):
    """Intrinsics [..., 3, 3] for an image resized by ``scale``: the first two rows times ``scale``."""
    is_np, dt = _result_kind(K)
    K_t = _as_tensor(K).clone()
    K_t[..., :2, :] = K_t[..., :2, :] * scale
    return _back(K_t, is_np, dt)


def extrinsic_to_viewmat(extrinsic):
    """[..., 3, 4] world-to-camera extrinsic -> [..., 4, 4] viewmat (appends the row [0, 0, 0, 1])."""
    is_np, dt = _result_kind(extrinsic)
    E = _as_tensor(extrinsic)
    if E.shape[-2:] != (3, 4):
        raise ValueError(f"extrinsic must be [..., 3, 4], got {tuple(E.shape)}")
    bottom = torch.zeros(E.shape[:-2] + (1, 4), dtype=E.dtype, device=E.device)
    bottom[..., 0, 3] = 1.0
    return _back(torch.cat([E, bottom], dim=-2), is_np, dt)


def world_to_camera(points, viewmat):
    """Camera-space points [..., N, 3] from world points [..., N, 3] and viewmat [..., 4, 4] (or [..., 3, 4])."""
    is_np, dt = _result_kind(points, viewmat)
    P = _as_tensor(points)
    if not P.is_floating_point():
        P = P.double()
    V = _as_tensor(viewmat, P)
    R = V[..., :3, :3]
    t = V[..., :3, 3]
    cam = P @ R.transpose(-1, -2) + t[..., None, :]
    return _back(cam, is_np, dt)


def project_points(points, viewmat, K):
    """Project world points to pixels.

    Args:
        points: [..., N, 3] world positions.
        viewmat: [..., 4, 4] (or [..., 3, 4]) world-to-camera, broadcastable against ``points``' batch dims.
        K: [..., 3, 3] intrinsics in pixels.
    Returns:
        uv: [..., N, 2] pixel coordinates (continuous; pixel (u, v) has its centre at (u + 0.5, v + 0.5)).
        z: [..., N] camera depth (points with z <= 0 are behind the camera; their uv is meaningless).
    """
    is_np, dt = _result_kind(points, viewmat, K)
    P = _as_tensor(points)
    if not P.is_floating_point():
        P = P.double()
    if P.shape[-1] != 3:
        raise ValueError(f"points must be [..., N, 3], got {tuple(P.shape)}")
    cam = world_to_camera(P, _as_tensor(viewmat, P))
    K_t = _as_tensor(K, P)
    z = cam[..., 2]
    safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    x = cam[..., 0] / safe_z
    y = cam[..., 1] / safe_z
    u = K_t[..., 0, 0, None] * x + K_t[..., 0, 1, None] * y + K_t[..., 0, 2, None]
    v = K_t[..., 1, 1, None] * y + K_t[..., 1, 2, None]
    return _back(torch.stack([u, v], dim=-1), is_np, dt), _back(z, is_np, dt)


def camera_center(viewmat):
    """World position [..., 3] of the camera centre ``-R^T t`` of a viewmat [..., 4, 4] (or extrinsic [..., 3, 4])."""
    is_np, dt = _result_kind(viewmat)
    V = _as_tensor(viewmat)
    R = V[..., :3, :3]
    t = V[..., :3, 3]
    c = -(R.transpose(-1, -2) @ t[..., None])[..., 0]
    return _back(c, is_np, dt)

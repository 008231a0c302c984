"""Rotation conversions in pure PyTorch (replaces the few pytorch3d functions GHA used).

Conventions (see docs/conventions.md):

- Quaternions are ``[..., 4]`` in **wxyz** order (real part first). Functions that read a quaternion as a
  rotation normalise it first.
- Rotation matrices ``[..., 3, 3]`` act on **column vectors**: ``x_world = R @ x_local``.
- Axis-angle vectors ``[..., 3]`` are in radians; their norm is the rotation angle.

Every function is batched over any number of leading dimensions, works for float32 and float64 on any
device, and is differentiable by autograd. Functions that divide by the rotation angle switch to a Taylor
expansion near zero and use the "double ``where``" trick, so that values *and* gradients are finite at
exactly zero angle (the identity rotation is where optimisation of head poses starts).
"""

from __future__ import annotations

import torch

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "normalize_quaternion",
    "quaternion_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "skew_symmetric",
]

# Below this squared angle the closed forms are replaced by Taylor series. The truncation error of the
# series used here is O(angle^6) ~ 1e-18 at the threshold, far below float64 precision, and the closed
# forms used above it have no catastrophic cancellation, so the switch is seamless in both dtypes.
_SMALL_ANGLE_SQ = 1e-6


def _check_last_dims(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if x.dim() < len(shape) or tuple(x.shape[-len(shape):]) != shape:
        expected = "[..., " + ", ".join(str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {expected}, got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _safe_norm(sq: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """sqrt(sq) where not ``small``, 1 elsewhere: keeps sqrt's gradient finite at sq == 0."""
    return torch.sqrt(torch.where(small, torch.ones_like(sq), sq))


def skew_symmetric(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix: ``skew_symmetric(v) @ u == cross(v, u)``.

    Args:
        v: ``[..., 3]``.
    Returns:
        ``[..., 3, 3]``.
    """
    _check_last_dims(v, (3,), "v")
    x, y, z = v.unbind(-1)
    nx, ny, nz = (-v).unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, nz, y, z, o, nx, ny, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """so(3) exponential map (Rodrigues' formula).

    ``R = I + a K + b K^2`` with ``K = skew(axis_angle)``, ``a = sin(t)/t``, ``b = (1 - cos t)/t^2``, where
    ``t = |axis_angle|``. ``b`` is evaluated as ``2 sin^2(t/2) / t^2`` to avoid the cancellation in
    ``1 - cos t``; both coefficients use Taylor series for tiny ``t``.

    Args:
        axis_angle: ``[..., 3]`` rotation vectors (radians).
    Returns:
        ``[..., 3, 3]`` rotation matrices (column-vector convention).
    """
    _check_last_dims(axis_angle, (3,), "axis_angle")
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = _safe_norm(theta_sq, small)
    half_sin = torch.sin(0.5 * theta)
    a_exact = torch.sin(theta) / theta
    b_exact = 2.0 * half_sin * half_sin / (theta * theta)
    a_taylor = 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0
    b_taylor = 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0
    a = torch.where(small, a_taylor, a_exact)[..., None, None]
    b = torch.where(small, b_taylor, b_exact)[..., None, None]
    k = skew_symmetric(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def normalize_quaternion(q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale quaternions to unit norm (a zero quaternion stays zero instead of becoming NaN).

    Args:
        q: ``[..., 4]``.
    Returns:
        ``[..., 4]``.
    """
    _check_last_dims(q, (4,), "q")
    return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(eps)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a (not necessarily unit) wxyz quaternion; ``q`` and ``-q`` give the same matrix.

    Args:
        q: ``[..., 4]`` wxyz, normalised inside.
    Returns:
        ``[..., 3, 3]``.
    """
    _check_last_dims(q, (4,), "q")
    w, x, y, z = normalize_quaternion(q).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    m = torch.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit wxyz quaternion of a rotation matrix, with ``w >= 0``.

    Shepperd's method: ``4w^2, 4x^2, 4y^2, 4z^2`` are linear in the diagonal; the largest of the four is
    at least 1 (they sum to 4), so dividing the off-diagonal combinations by it is always well conditioned,
    including at 180 degree rotations where ``w`` -> 0.

    Args:
        matrix: ``[..., 3, 3]`` rotation matrices.
    Returns:
        ``[..., 4]`` wxyz, unit norm, ``w >= 0``.
    """
    _check_last_dims(matrix, (3, 3), "matrix")
    m = matrix.reshape(matrix.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    t = torch.stack(
        [
            1 + m00 + m11 + m22,  # 4 w^2
            1 + m00 - m11 - m22,  # 4 x^2
            1 - m00 + m11 - m22,  # 4 y^2
            1 - m00 - m11 + m22,  # 4 z^2
        ],
        dim=-1,
    )
    # Each row is 4 * q_i * q, scaled below by 1 / (4 q_i) = 1 / (2 sqrt(t_i)).
    candidates = torch.stack(
        [
            torch.stack([t[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, t[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, t[..., 2], m21 + m12], dim=-1),
            torch.stack([m10 - m01, m02 + m20, m21 + m12, t[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    # Rows that are not selected may have t_i <= 0; clamping keeps their (discarded) values and gradients
    # finite. The selected row always has t_i >= 1, so the clamp never touches it.
    candidates = candidates / (2.0 * torch.sqrt(t.clamp_min(0.1)))[..., None]
    best = t.argmax(dim=-1)[..., None, None].expand(t.shape[:-1] + (1, 4))
    q = torch.gather(candidates, -2, best).squeeze(-2)
    q = normalize_quaternion(q)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions (broadcast over leading dims).

    For unit quaternions ``quaternion_to_matrix(a * b) == quaternion_to_matrix(a) @ quaternion_to_matrix(b)``:
    ``b`` is applied first. The inputs are *not* normalised: this is the plain algebraic product, which is
    what composing rotations needs and what callers mixing in non-unit quaternions expect.

    Args:
        a: ``[..., 4]`` wxyz.
        b: ``[..., 4]`` wxyz.
    Returns:
        ``[..., 4]`` wxyz.
    """
    _check_last_dims(a, (4,), "a")
    _check_last_dims(b, (4,), "b")
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def unit_quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a *unit* wxyz quaternion, ``R = I + 2 w [v]x + 2 [v]x^2`` (``v`` the vector part).

    The same matrix as :func:`quaternion_to_matrix` for unit input, in about a third of the kernels (no
    normalisation): for per-frame head poses, whose launches rather than arithmetic are the cost on a GPU.

    Args:
        q: ``[..., 4]`` wxyz with ``|q| = 1``.
    Returns:
        ``[..., 3, 3]``.
    """
    _check_last_dims(q, (4,), "q")
    k = skew_symmetric(q[..., 1:])
    two_w = (2.0 * q[..., :1])[..., None]  # [..., 1, 1]
    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    return torch.addcmul(eye + 2.0 * (k @ k), two_w, k)


def quaternion_product_matrix(a: torch.Tensor) -> torch.Tensor:
    """The matrix of left multiplication by ``a``: ``quaternion_multiply(a, b) == M @ b`` for ``b`` ``[..., 4]``.

    Composing one rotation with many (a head pose with every Gaussian's rotation) is then a single batched matmul,
    ``b @ M.transpose(-1, -2)``, instead of some thirty elementwise kernels over all Gaussians.

    Args:
        a: ``[..., 4]`` wxyz.
    Returns:
        ``[..., 4, 4]``.
    """
    _check_last_dims(a, (4,), "a")
    w, x, y, z = a.unbind(-1)
    _, nx, ny, nz = (-a).unbind(-1)
    rows = [w, nx, ny, nz, x, w, nz, y, y, z, w, nx, z, ny, x, w]
    return torch.stack(rows, dim=-1).reshape(a.shape[:-1] + (4, 4))


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """Unit wxyz quaternion ``[cos(t/2), sin(t/2) * axis]`` of a rotation vector with angle ``t``.

    ``w >= 0`` for angles up to pi; larger angles give ``w < 0`` (the same rotation as ``-q``).

    Args:
        axis_angle: ``[..., 3]`` (radians).
    Returns:
        ``[..., 4]`` wxyz.
    """
    _check_last_dims(axis_angle, (3,), "axis_angle")
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = _safe_norm(theta_sq, small)
    # sin(t/2) / t = 1/2 - t^2/48 + t^4/3840 - ...
    s_taylor = 0.5 - theta_sq / 48.0 + theta_sq * theta_sq / 3840.0
    s = torch.where(small, s_taylor, torch.sin(0.5 * theta) / theta)
    w = torch.where(small, 1.0 - theta_sq / 8.0 + theta_sq * theta_sq / 384.0, torch.cos(0.5 * theta))
    return torch.cat([w[..., None], axis_angle * s[..., None]], dim=-1)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Rotation vector of a wxyz quaternion, with angle in ``[0, pi]`` (``q`` and ``-q`` agree).

    Args:
        q: ``[..., 4]`` wxyz, normalised inside.
    Returns:
        ``[..., 3]`` (radians).
    """
    _check_last_dims(q, (4,), "q")
    q = normalize_quaternion(q)
    # Use the hemisphere w >= 0 so the angle 2 * atan2(|v|, w) lands in [0, pi].
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    s_sq = (v * v).sum(-1)
    small = s_sq < _SMALL_ANGLE_SQ
    s = _safe_norm(s_sq, small)
    # angle / s = 2 atan2(s, w) / s; for small s (so w ~ 1): 2/w - 2 s^2 / (3 w^3) + 2 s^4 / (5 w^5).
    w_safe = torch.where(small, w, torch.ones_like(w))
    r = s_sq / (w_safe * w_safe)
    f_taylor = (2.0 / w_safe) * (1.0 - r / 3.0 + r * r / 5.0)
    f = torch.where(small, f_taylor, 2.0 * torch.atan2(s, w) / s)
    return v * f[..., None]


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """so(3) logarithm: rotation vector with angle in ``[0, pi]``.

    Goes through :func:`matrix_to_quaternion`, which stays accurate near pi where the usual
    ``acos((trace - 1) / 2)`` formula loses the axis.

    Args:
        matrix: ``[..., 3, 3]`` rotation matrices.
    Returns:
        ``[..., 3]`` (radians).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))

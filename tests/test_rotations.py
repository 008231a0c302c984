import math

import pytest
import torch

from cgha.utils.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    skew_symmetric,
)

try:
    from scipy.spatial.transform import Rotation
except ImportError:
    Rotation = None


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _random_axis_angles(n, dtype=torch.float64, seed=0, max_angle=math.pi):
    g = _gen(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=dtype), dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=dtype) * max_angle
    return axis * angle


def _rodrigues_reference(aa):
    """Textbook Rodrigues in float64 with explicit unit axis (aa must be non-zero)."""
    aa = aa.double()
    theta = aa.norm(dim=-1, keepdim=True)
    k = skew_symmetric(aa / theta)
    t = theta[..., None]
    eye = torch.eye(3, dtype=torch.float64)
    return eye + torch.sin(t) * k + (1 - torch.cos(t)) * (k @ k)


def _assert_rotation(r, atol):
    eye = torch.eye(3, dtype=r.dtype).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, atol=atol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(r.shape[:-2], dtype=r.dtype), atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_closed_forms(dtype):
    a = 0.7
    c, s = math.cos(a), math.sin(a)
    expected = {
        0: [[1, 0, 0], [0, c, -s], [0, s, c]],
        1: [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        2: [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    for axis, mat in expected.items():
        aa = torch.zeros(3, dtype=dtype)
        aa[axis] = a
        torch.testing.assert_close(axis_angle_to_matrix(aa), torch.tensor(mat, dtype=dtype))
    # 90 degrees about z maps x to y (column vectors, right-handed).
    r = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=dtype))
    torch.testing.assert_close(r @ torch.tensor([1.0, 0.0, 0.0], dtype=dtype), torch.tensor([0.0, 1.0, 0.0], dtype=dtype))
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3, dtype=dtype)), torch.eye(3, dtype=dtype))


def test_axis_angle_matches_reference_on_random_vectors():
    aa = _random_axis_angles(200, max_angle=3.0 * math.pi)
    r = axis_angle_to_matrix(aa)
    torch.testing.assert_close(r, _rodrigues_reference(aa), atol=1e-12, rtol=0)
    if Rotation is not None:
        torch.testing.assert_close(r, torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix()), atol=1e-12, rtol=0)
    _assert_rotation(r, 1e-12)
    r32 = axis_angle_to_matrix(aa.float())
    torch.testing.assert_close(r32.double(), r, atol=2e-6, rtol=0)
    _assert_rotation(r32, 2e-6)


def test_axis_angle_tiny_angles_match_reference():
    # Just above and below the Taylor switch, in both dtypes.
    for scale in [1e-2, 1.1e-3, 9e-4, 1e-5, 1e-9]:
        aa = _random_axis_angles(20, seed=1, max_angle=1.0) * scale + 1e-300
        ref = _rodrigues_reference(aa)
        torch.testing.assert_close(axis_angle_to_matrix(aa), ref, atol=1e-15, rtol=0)
        torch.testing.assert_close(axis_angle_to_matrix(aa.float()).double(), ref, atol=1e-7, rtol=0)


def test_batched_leading_dims_and_shapes():
    aa = _random_axis_angles(24).reshape(2, 3, 4, 3)
    r = axis_angle_to_matrix(aa)
    assert r.shape == (2, 3, 4, 3, 3)
    torch.testing.assert_close(r[1, 2, 3], axis_angle_to_matrix(aa[1, 2, 3]))
    q = matrix_to_quaternion(r)
    assert q.shape == (2, 3, 4, 4)
    assert matrix_to_axis_angle(r).shape == (2, 3, 4, 3)
    assert quaternion_to_matrix(q).shape == (2, 3, 4, 3, 3)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        axis_angle_to_matrix(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        matrix_to_quaternion(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        quaternion_to_matrix(torch.zeros(3))


def test_quaternion_to_matrix_closed_form_and_normalisation():
    a = 1.1
    q = torch.tensor([math.cos(a / 2), 0.0, math.sin(a / 2), 0.0], dtype=torch.float64)
    expected = axis_angle_to_matrix(torch.tensor([0.0, a, 0.0], dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q), expected)
    torch.testing.assert_close(quaternion_to_matrix(3.5 * q), expected)
    torch.testing.assert_close(quaternion_to_matrix(-q), expected)
    if Rotation is not None:
        g = _gen(3)
        qr = normalize_quaternion(torch.randn(50, 4, generator=g, dtype=torch.float64))
        scipy_q = qr[:, [1, 2, 3, 0]].numpy()  # scipy is xyzw
        torch.testing.assert_close(quaternion_to_matrix(qr), torch.from_numpy(Rotation.from_quat(scipy_q).as_matrix()))


def test_round_trips_including_near_zero_and_near_pi():
    g = _gen(4)
    axis = torch.nn.functional.normalize(torch.randn(8, 3, generator=g, dtype=torch.float64), dim=-1)
    angles = torch.tensor([0.0, 1e-12, 1e-7, 1e-4, 0.3, 1.5, 2.9, math.pi - 1e-3, math.pi - 1e-7], dtype=torch.float64)
    aa = (axis[:, None, :] * angles[None, :, None]).reshape(-1, 3)  # [72, 3]
    aa = torch.cat([aa, _random_axis_angles(100, seed=5)])
    r = axis_angle_to_matrix(aa)
    _assert_rotation(r, 1e-12)

    q = matrix_to_quaternion(r)
    assert (q[..., 0] >= 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(q), dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q), r, atol=1e-12, rtol=0)
    q_direct = axis_angle_to_quaternion(aa)
    torch.testing.assert_close(q_direct, q, atol=1e-12, rtol=0)  # all angles <= pi, so w >= 0 for both

    aa_back = matrix_to_axis_angle(r)
    # Near pi the axis is recovered up to round-off of the matrix (~1e-16 / (pi - angle)).
    torch.testing.assert_close(aa_back, aa, atol=1e-8, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(aa_back), r, atol=1e-12, rtol=0)
    torch.testing.assert_close(quaternion_to_axis_angle(q_direct), aa, atol=1e-8, rtol=0)

    r32 = r.float()
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(r32)), r32, atol=1e-6, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(matrix_to_axis_angle(r32)), r32, atol=1e-5, rtol=0)


def test_exactly_pi_rotations():
    for axis in torch.eye(3, dtype=torch.float64):
        r = axis_angle_to_matrix(axis * math.pi)
        q = matrix_to_quaternion(r)
        torch.testing.assert_close(q, torch.cat([torch.zeros(1, dtype=torch.float64), axis]), atol=1e-12, rtol=0)
        aa = matrix_to_axis_angle(r)
        assert abs(aa.norm().item() - math.pi) < 1e-12
        torch.testing.assert_close(axis_angle_to_matrix(aa), r, atol=1e-12, rtol=0)


def test_angles_beyond_pi_are_wrapped():
    aa = torch.tensor([0.0, 0.0, 1.5 * math.pi], dtype=torch.float64)
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(aa)), torch.tensor([0.0, 0.0, -0.5 * math.pi], dtype=torch.float64))
    q = axis_angle_to_quaternion(aa)
    torch.testing.assert_close(quaternion_to_axis_angle(q), torch.tensor([0.0, 0.0, -0.5 * math.pi], dtype=torch.float64))


def test_quaternion_multiply_matches_matrix_product():
    g = _gen(6)
    a = normalize_quaternion(torch.randn(30, 4, generator=g, dtype=torch.float64))
    b = normalize_quaternion(torch.randn(30, 4, generator=g, dtype=torch.float64))
    ab = quaternion_multiply(a, b)
    torch.testing.assert_close(quaternion_to_matrix(ab), quaternion_to_matrix(a) @ quaternion_to_matrix(b))
    torch.testing.assert_close(ab.norm(dim=-1), torch.ones(30, dtype=torch.float64))
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(quaternion_multiply(identity, a), a)  # broadcasting
    torch.testing.assert_close(quaternion_multiply(a, identity), a)
    # Hamilton's rules: i*j = k, j*i = -k.
    i, j, k = torch.eye(4, dtype=torch.float64)[1:]
    torch.testing.assert_close(quaternion_multiply(i, j), k)
    torch.testing.assert_close(quaternion_multiply(j, i), -k)
    # Composition of axis-angles about the same axis adds the angles.
    qa = axis_angle_to_quaternion(torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64))
    qb = axis_angle_to_quaternion(torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_axis_angle(quaternion_multiply(qa, qb)), torch.tensor([0.0, 0.8, 0.0], dtype=torch.float64))


def test_normalize_quaternion_zero_is_finite():
    q = normalize_quaternion(torch.zeros(2, 4))
    assert torch.isfinite(q).all()
    torch.testing.assert_close(normalize_quaternion(torch.tensor([0.0, 3.0, 0.0, 4.0])), torch.tensor([0.0, 0.6, 0.0, 0.8]))


def test_gradients_finite_at_zero_angle():
    zero = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (zero,))
    assert torch.autograd.gradcheck(axis_angle_to_quaternion, (zero,))
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (torch.eye(3, dtype=torch.float64).repeat(2, 1, 1).requires_grad_(),))
    ident_q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_axis_angle, (ident_q,))
    # d R / d aa at 0 is the generator skew(e_i); d(sum R*W)/d aa must be finite and exact.
    zero32 = torch.zeros(3, requires_grad=True)
    weight = torch.randn(3, 3, generator=_gen(7))
    (axis_angle_to_matrix(zero32) * weight).sum().backward()
    expected = torch.stack([(skew_symmetric(e) * weight).sum() for e in torch.eye(3)])
    torch.testing.assert_close(zero32.grad, expected)


def test_gradients_on_generic_inputs():
    aa = (_random_axis_angles(3, seed=8) + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    assert torch.autograd.gradcheck(axis_angle_to_quaternion, (aa,))
    r = axis_angle_to_matrix(_random_axis_angles(3, seed=9, max_angle=2.5)).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_quaternion, (r,))
    q = torch.randn(3, 4, generator=_gen(10), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (q,))
    b = torch.randn(3, 4, generator=_gen(11), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_multiply, (q, b))


def test_quaternion_product_matrix_is_left_multiplication():
    from cgha.utils.rotations import quaternion_product_matrix

    g = _gen(11)
    a = torch.randn(5, 4, generator=g, dtype=torch.float64)
    b = torch.randn(5, 7, 4, generator=g, dtype=torch.float64)  # many right factors per left factor
    expected = quaternion_multiply(a[:, None, :], b)
    torch.testing.assert_close(b @ quaternion_product_matrix(a).transpose(-1, -2), expected)
    torch.testing.assert_close((quaternion_product_matrix(a) @ b[:, 0, :, None])[..., 0], expected[:, 0])


def test_unit_quaternion_to_matrix_matches_general_formula():
    from cgha.utils.rotations import unit_quaternion_to_matrix

    q = normalize_quaternion(torch.randn(40, 4, generator=_gen(12), dtype=torch.float64))
    torch.testing.assert_close(unit_quaternion_to_matrix(q), quaternion_to_matrix(q))
    aa = torch.randn(40, 3, generator=_gen(13), dtype=torch.float64)
    torch.testing.assert_close(unit_quaternion_to_matrix(axis_angle_to_quaternion(aa)), axis_angle_to_matrix(aa))

import pytest
import torch

from cgha.utils.knn import knn, mean_distance_to_nearest, mean_sq_distance_to_3nn, nearest_sq_distance


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _brute_force(query, points, k, exclude_self=False):
    d = ((query.double()[:, None, :] - points.double()[None, :, :]) ** 2).sum(-1)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return torch.topk(d, k, dim=1, largest=False)


@pytest.mark.parametrize(
    "num_query, num_points, k, chunk_size, point_chunk_size",
    [
        (97, 211, 5, 16, 50),  # neither chunk size divides its count
        (50, 64, 1, 7, 13),  # k = 1
        (33, 40, 40, 1000, 3),  # k = N, point chunks smaller than k
        (10, 30, 4, 3, 100000),
    ],
)
def test_knn_matches_brute_force(num_query, num_points, k, chunk_size, point_chunk_size):
    g = _gen(num_query)
    points = torch.randn(num_points, 3, generator=g, dtype=torch.float64)
    query = torch.randn(num_query, 3, generator=g, dtype=torch.float64)
    d, i = knn(query, points, k, chunk_size=chunk_size, point_chunk_size=point_chunk_size)
    ref_d, ref_i = _brute_force(query, points, k)
    assert d.shape == (num_query, k) and i.shape == (num_query, k)
    assert i.dtype == torch.long
    torch.testing.assert_close(i, ref_i)
    torch.testing.assert_close(d, ref_d, rtol=0, atol=1e-12)
    assert (d[:, 1:] >= d[:, :-1]).all()


def test_knn_float32_high_dim_and_far_from_origin():
    g = _gen(1)
    points = torch.randn(300, 16, generator=g) + 1000.0  # the expansion would cancel badly without centring
    query = torch.randn(70, 16, generator=g) + 1000.0
    d, i = knn(query, points, 6, chunk_size=32, point_chunk_size=128)
    ref_d, _ = _brute_force(query, points, 6)
    torch.testing.assert_close(d.double(), ref_d, rtol=1e-4, atol=1e-4)
    # Whatever was picked, the reported distances are the exact ones of those indices.
    exact = ((query[:, None, :].double() - points[i].double()) ** 2).sum(-1)
    torch.testing.assert_close(d.double(), exact, rtol=1e-5, atol=1e-5)
    assert d.dtype == torch.float32


def test_knn_exclude_self_and_duplicates():
    g = _gen(2)
    points = torch.randn(123, 3, generator=g, dtype=torch.float64)
    d, i = knn(points, points, 4, chunk_size=10, point_chunk_size=17, exclude_self=True)
    ref_d, ref_i = _brute_force(points, points, 4, exclude_self=True)
    torch.testing.assert_close(i, ref_i)
    torch.testing.assert_close(d, ref_d, rtol=0, atol=1e-12)
    assert not (i == torch.arange(123)[:, None]).any()
    # A duplicated point is its twin's nearest neighbour at distance 0 (exclusion is by index).
    dup = torch.cat([points, points[:1]])
    d, i = knn(dup, dup, 1, exclude_self=True)
    assert i[0, 0] == 123 and i[123, 0] == 0
    assert d[0, 0] == 0 and d[123, 0] == 0


def test_knn_batched_query_and_gradients():
    g = _gen(3)
    points = torch.randn(40, 3, generator=g, dtype=torch.float64)
    query = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    d, i = knn(query, points, 3, chunk_size=4)
    assert d.shape == (2, 5, 3) and i.shape == (2, 5, 3)
    d1, i1 = knn(query[1], points, 3)
    torch.testing.assert_close(d[1], d1)
    torch.testing.assert_close(i[1], i1)
    # exclude_self with a batch of copies of the cloud: row r excludes point r % N.
    dd, ii = knn(points.expand(2, 40, 3), points, 2, exclude_self=True)
    torch.testing.assert_close(ii[0], ii[1])
    assert not (ii[0] == torch.arange(40)[:, None]).any()

    q = query[0].clone().requires_grad_()
    p = points.clone().requires_grad_()
    d, i = knn(q, p, 3)
    d.sum().backward()
    expected_q = 2 * (q[:, None, :] - p[i]).sum(1)
    torch.testing.assert_close(q.grad, expected_q.detach())
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_knn_errors():
    pts = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn(pts, pts, 6)
    with pytest.raises(ValueError, match="k must be"):
        knn(pts, pts, 5, exclude_self=True)
    with pytest.raises(ValueError, match="k must be"):
        knn(pts, pts, 0)
    with pytest.raises(ValueError, match="query must have shape"):
        knn(torch.randn(4, 2), pts, 1)
    with pytest.raises(ValueError, match=r"points must have shape \[N, D\]"):
        knn(pts, pts[None], 1)
    with pytest.raises(ValueError, match="exclude_self"):
        knn(torch.randn(4, 3), pts, 1, exclude_self=True)
    with pytest.raises(ValueError, match="dtype"):
        knn(pts.double(), pts, 1)
    d, i = knn(torch.empty(0, 3), pts, 2)
    assert d.shape == (0, 2) and i.shape == (0, 2)


def test_mean_sq_distance_to_3nn_on_grid():
    spacing = 0.25
    axis = torch.arange(5, dtype=torch.float32) * spacing
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    grid = grid[torch.randperm(len(grid), generator=_gen(4))]
    out = mean_sq_distance_to_3nn(grid, chunk_size=17, point_chunk_size=31)
    assert out.shape == (125,)
    # Every grid point has at least 3 axis neighbours at distance `spacing`, so 3 nearest = 3 x spacing^2
    # (including corners, which have exactly 3).
    torch.testing.assert_close(out, torch.full((125,), spacing**2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean_distance_to_nearest(grid, k=3), torch.full((125,), spacing), rtol=1e-5, atol=1e-6)
    # k = 6 differs between the two means: an interior point has exactly 6 neighbours at `spacing`,
    # but a corner has 3 at `spacing` and 3 at sqrt(2) * spacing.
    corner = (grid == 0).all(dim=1).nonzero().item()
    expected_corner = (3 * spacing + 3 * 2**0.5 * spacing) / 6
    assert abs(mean_distance_to_nearest(grid, k=6)[corner].item() - expected_corner) < 1e-6


def test_mean_sq_distance_to_3nn_is_mean_of_squares():
    # Collinear points at 0, 1, 3, 7, 15: neighbours of 0 are 1, 3, 7.
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0], [15, 0, 0]])
    out = mean_sq_distance_to_3nn(pts)
    torch.testing.assert_close(out[0], torch.tensor((1 + 9 + 49) / 3))
    torch.testing.assert_close(out[4], torch.tensor((64 + 144 + 196) / 3))
    torch.testing.assert_close(mean_distance_to_nearest(pts)[0], torch.tensor((1 + 3 + 7) / 3))
    with pytest.raises(ValueError, match="at least 4 points"):
        mean_sq_distance_to_3nn(pts[:3])
    with pytest.raises(ValueError, match="more than k=3"):
        mean_distance_to_nearest(pts[:3])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        mean_sq_distance_to_3nn(torch.randn(10, 2))


@pytest.mark.parametrize("block_elements", [1 << 26, 200])  # one block; blocks of 5 rows (5 does not divide 97)
def test_nearest_sq_distance_matches_knn(block_elements):
    g = _gen(3)
    query = torch.randn(97, 3, generator=g, dtype=torch.float64) + 100.0  # far from the origin: no cancellation
    points = torch.randn(13, 3, generator=g, dtype=torch.float64) + 100.0
    expected = _brute_force(query, points, 1).values[:, 0]
    torch.testing.assert_close(nearest_sq_distance(query, points, block_elements), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"need points \[K >= 1, 3\]"):
        nearest_sq_distance(query, points[:, :2])

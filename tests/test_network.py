import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgha.network.embedding import PositionalEmbedding
from cgha.network.mlp import MLP


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- positional embedding


def test_embedding_dims_and_known_values():
    emb = PositionalEmbedding(2, 3)
    assert emb.out_dim == 2 * (1 + 2 * 3)
    x = torch.tensor([[0.5, -1.0]])
    out = emb(x)
    assert out.shape == (1, emb.out_dim)
    expected = [0.5, -1.0]
    for f in (1.0, 2.0, 4.0):
        expected += [math.sin(0.5 * f), math.sin(-f), math.cos(0.5 * f), math.cos(-f)]
    torch.testing.assert_close(out, torch.tensor([expected]))


def test_embedding_zero_input_and_no_input():
    emb = PositionalEmbedding(3, 2, include_input=False)
    assert emb.out_dim == 12
    out = emb(torch.zeros(3))
    torch.testing.assert_close(out, torch.tensor([0.0] * 3 + [1.0] * 3 + [0.0] * 3 + [1.0] * 3))
    ident = PositionalEmbedding(4, 0)
    x = torch.randn(5, 4, generator=_gen())
    torch.testing.assert_close(ident(x), x)
    assert ident.out_dim == 4


def test_embedding_batched_dtype_and_gha_layout():
    emb = PositionalEmbedding(3, 4).double()
    x = torch.randn(2, 7, 3, generator=_gen(1), dtype=torch.float64)
    out = emb(x)
    assert out.shape == (2, 7, 27) and out.dtype == torch.float64
    # GHA's embedder: cat([x] + [fn(x * 2**i) for i in range(F) for fn in (sin, cos)], -1).
    ref = torch.cat([x] + [fn(x * 2.0**i) for i in range(4) for fn in (torch.sin, torch.cos)], -1)
    torch.testing.assert_close(out, ref)
    assert "freqs" not in emb.state_dict()


def test_embedding_errors():
    with pytest.raises(ValueError, match="in_dim"):
        PositionalEmbedding(0, 3)
    with pytest.raises(ValueError, match="num_freqs"):
        PositionalEmbedding(3, -1)
    with pytest.raises(ValueError, match="empty"):
        PositionalEmbedding(3, 0, include_input=False)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        PositionalEmbedding(3, 2)(torch.zeros(4, 2))


# ---------------------------------------------------------------- MLP


def _gha_reference(state_dict, dims, x_bcn, last_op=None):
    """GHA's MLP forward written with F.conv1d on [B, C, N] (skip layer at len(dims) // 2)."""
    skip = len(dims) // 2
    y = x_bcn
    n_layers = len(dims) - 1
    for l in range(n_layers):
        if l == skip:
            y = torch.cat([y, x_bcn], dim=1)
        y = F.conv1d(y, state_dict[f"conv{l}.weight"], state_dict[f"conv{l}.bias"])
        if l != n_layers - 1:
            y = F.leaky_relu(y)
    return last_op(y) if last_op is not None else y


def _random_gha_state_dict(dims, seed=0):
    g = _gen(seed)
    skip = len(dims) // 2
    sd = {}
    for l in range(len(dims) - 1):
        in_ch = dims[l] + (dims[0] if l == skip else 0)
        sd[f"conv{l}.weight"] = torch.randn(dims[l + 1], in_ch, 1, generator=g) / math.sqrt(in_ch)
        sd[f"conv{l}.bias"] = torch.randn(dims[l + 1], generator=g) * 0.1
    return sd


def test_mlp_shapes_and_layers():
    mlp = MLP([10, 32, 32, 32, 4])
    assert mlp.skip_layer == 2
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(32, 10), (32, 32), (32, 42), (4, 32)]
    assert mlp(torch.randn(2, 50, 10)).shape == (2, 50, 4)
    assert mlp(torch.randn(50, 10)).shape == (50, 4)
    four = MLP([6, 8, 8, 3])  # len 4: skip at index 2, the last layer
    assert four.skip_layer == 2 and four.layers[2].in_features == 14
    single = MLP([5, 2])  # one layer: no skip, no activation
    assert single.skip_layer is None
    x = torch.randn(3, 5, generator=_gen(2))
    torch.testing.assert_close(single(x), single.layers[0](x))
    three = MLP([4, 6, 2])  # the skip feeds the last layer
    assert three.skip_layer == 1 and three.layers[1].in_features == 10


def test_mlp_last_op_and_no_activation_after_last_layer():
    mlp = MLP([3, 8, 8, 2])
    with torch.no_grad():
        mlp.layers[-1].bias.fill_(-100.0)  # a trailing leaky ReLU would scale this by 0.01
    x = torch.randn(4, 3, generator=_gen(3))
    assert (mlp(x) < -50).all()
    squashed = MLP([3, 8, 8, 2], last_op=torch.tanh)
    squashed.load_state_dict(mlp.state_dict())
    torch.testing.assert_close(squashed(x), torch.tanh(mlp(x)))
    with_module = MLP([3, 8, 8, 2], last_op=nn.Sigmoid())
    assert set(with_module.state_dict()) == set(mlp.state_dict())


def test_mlp_skip_connection_is_used():
    mlp = MLP([4, 16, 16, 16, 3])
    with torch.no_grad():
        for layer in mlp.layers[: mlp.skip_layer]:
            layer.weight.zero_()
            layer.bias.zero_()
    a = torch.randn(5, 4, generator=_gen(4))
    b = torch.randn(5, 4, generator=_gen(5))
    # Everything before the skip layer now outputs 0, so only the skip can carry the input through.
    assert not torch.allclose(mlp(a), mlp(b))
    with torch.no_grad():
        mlp.layers[mlp.skip_layer].weight[:, 16:].zero_()
    torch.testing.assert_close(mlp(a), mlp(b))


def test_mlp_under_autocast_equals_layer_by_layer_autocast():
    """The input cast once at entry gives exactly what autocast gives layer by layer (float32 skip concatenation)."""
    torch.manual_seed(0)
    mlp = MLP([12, 32, 32, 32, 5], last_op=nn.Tanh())
    x = torch.randn(40, 12, generator=_gen(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = x
        for index, layer in enumerate(mlp.layers):
            if index == mlp.skip_layer:
                y = torch.cat([y, x], dim=-1)  # bf16 hidden + float32 input: promoted to float32, cast by linear
            y = layer(y)
            y = F.leaky_relu(y, 0.01) if index < len(mlp.layers) - 1 else torch.tanh(y)
        got = mlp(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, y)


def test_mlp_validation():
    for bad in ([], [3], [3, 0, 2], [3, -1], [3, 2.5], [3, True]):
        with pytest.raises(ValueError, match="dims"):
            MLP(bad)
    with pytest.raises(ValueError, match="last_op"):
        MLP([3, 2], last_op="tanh")
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        MLP([3, 2])(torch.zeros(4, 5))


@pytest.mark.parametrize("dims", [[16, 32, 32, 32, 32, 8], [7, 12, 5], [6, 9, 9, 4], [3, 2]])
def test_mlp_imports_gha_conv1d_weights(dims):
    sd = _random_gha_state_dict(dims, seed=len(dims))
    mlp = MLP(dims, last_op=torch.tanh)
    mlp.load_gha_conv1d_state_dict(sd)
    x = torch.randn(2, 37, dims[0], generator=_gen(6))  # [B, N, C] channels last
    ref = _gha_reference(sd, dims, x.transpose(1, 2), last_op=torch.tanh).transpose(1, 2)
    torch.testing.assert_close(mlp(x), ref, rtol=1e-5, atol=1e-6)
    exported = mlp.gha_conv1d_state_dict()
    assert exported.keys() == sd.keys()
    for key in sd:
        torch.testing.assert_close(exported[key], sd[key])


def test_mlp_gha_import_with_prefix_and_errors():
    dims = [5, 8, 8, 2]
    sd = _random_gha_state_dict(dims)
    whole = {f"color_mlp.{k}": v for k, v in sd.items()}
    whole["deform_mlp.conv0.weight"] = torch.zeros(1, 1, 1)  # other modules' keys are ignored
    mlp = MLP(dims).double()
    mlp.load_gha_conv1d_state_dict(whole, prefix="color_mlp.")
    assert mlp.layers[0].weight.dtype == torch.float64  # copied into the existing parameters
    torch.testing.assert_close(mlp.layers[1].weight.float(), sd["conv1.weight"][..., 0])

    missing = dict(sd)
    del missing["conv2.bias"]
    with pytest.raises(ValueError, match="missing 'conv2.bias'"):
        MLP(dims).load_gha_conv1d_state_dict(missing)
    with pytest.raises(ValueError, match="conv1.weight has shape"):
        MLP([5, 8, 9, 2]).load_gha_conv1d_state_dict(sd)
    with pytest.raises(ValueError, match="does not"):
        MLP([5, 8, 2]).load_gha_conv1d_state_dict(_random_gha_state_dict([5, 8, 8, 8, 2]))

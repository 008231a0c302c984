"""Compressed-file format 2: Morton-sorted Gaussians, grid positions, per-channel integer weights, entropy coding,
presets, and version-1 files still loading."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.avatar.inference import render_frame
from cgha.compact import entropy
from cgha.compact.avatar_file import load_compact_avatar, save_compact_avatar
from cgha.compact.codec import FORMAT_VERSION, read_compact, write_compact
from cgha.compact.config import CompactStoreConfig
from cgha.compact.morton import grid_frame, morton_decode, morton_encode, morton_order, to_cells
from cgha.compact.presets import PRESETS, preset_overrides
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.config import TrainConfig, load_config
from cgha.errors import CheckpointError, ConfigError
from cgha.module.gaussian_head import GaussianHeadModule
from cgha.module.super_resolution import SuperResolutionModule

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CPU = torch.device("cpu")
# Tiny networks (the widths GHA's inputs and outputs fix, 4 hidden units): the file's logic, not its size, is tested.
TINY = ["gaussianheadmodule.exp_color_mlp=[144,4,32]", "gaussianheadmodule.pose_color_mlp=[182,4,32]",
        "gaussianheadmodule.exp_attributes_mlp=[144,4,8]", "gaussianheadmodule.pose_attributes_mlp=[182,4,8]",
        "gaussianheadmodule.exp_deform_mlp=[43,4,3]", "gaussianheadmodule.pose_deform_mlp=[81,4,3]",
        "supresmodule.network_capacity=2"]


# ------------------------------------------------------------------------------------------------- morton
def test_morton_codes_round_trip_and_order_follows_the_curve():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 2 ** 10, (500, 3))
    codes = morton_encode(cells, 10)
    assert np.array_equal(morton_decode(codes, 3, 10), cells)
    assert morton_encode(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0]]), 10).tolist() == [1, 2, 4, 8]
    points = rng.standard_normal((300, 3))
    order = morton_order(points, 12)
    origin, step = grid_frame(points, 12)
    sorted_codes = morton_encode(to_cells(points[order], origin, step, 12), 12)
    assert sorted(order.tolist()) == list(range(300)) and np.all(np.diff(sorted_codes.astype(np.int64)) >= 0)
    with pytest.raises(ValueError, match="63-bit"):
        morton_encode(cells, 22)


# -------------------------------------------------------------------------------------------------- codec
def test_grid_positions_decode_within_half_a_step_in_any_order(tmp_path):
    rng = np.random.default_rng(1)
    points = (rng.standard_normal((2000, 3)) * [0.9, 1.2, 1.0]).astype(np.float32)
    path = tmp_path / "g.cgha"
    sizes = {}
    for name, rows in (("shuffled", points), ("sorted", points[morton_order(points, 12)])):
        sizes[name] = write_compact(path, {"xyz": (rows, "grid", {"bits": 12, "entropy": "lzma"})}, {})["xyz"]
        decoded = read_compact(path)[0]["xyz"]
        step = (rows.max(0) - rows.min(0)) / (2 ** 12 - 1)
        assert decoded.dtype == np.float32 and np.all(np.abs(decoded - rows) <= step / 2 + 1e-6)
    # Sorted, consecutive codes differ little: fewer bytes than the 36 bits per point of the grid.
    assert sizes["sorted"] < 0.75 * sizes["shuffled"] and sizes["sorted"] < 2000 * 36 / 8


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_per_channel_integer_weights(tmp_path, bits):
    rng = np.random.default_rng(bits)
    weight = rng.standard_normal((6, 5, 3)).astype(np.float32) * np.array([1e-3, 1, 30, 0, 2, 5])[:, None, None]
    path = tmp_path / "w.cgha"
    sizes = write_compact(path, {"w": (weight, "qint", {"bits": bits})}, {})
    decoded = read_compact(path)[0]["w"]
    scale = np.abs(weight).reshape(6, -1).max(1) / (2 ** (bits - 1) - 1)
    assert decoded.shape == weight.shape and decoded.dtype == np.float32
    assert np.all(np.abs(decoded - weight) <= scale[:, None, None] / 2 * (1 + 1e-5) + 1e-12)
    assert np.all(decoded[3] == 0)  # an all-zero channel stays zero
    assert sizes["w"] == 6 * 4 + (weight.size * bits + 7) // 8


@pytest.mark.parametrize("coder", ["zlib", "lzma"])
def test_entropy_coding_round_trips_and_is_kept_only_where_it_helps(tmp_path, coder):
    rng = np.random.default_rng(2)
    index = np.repeat(rng.integers(0, 3000, 50), 40)  # runs, as Morton-sorted indices have
    noise = rng.integers(0, 256, 1000).astype(np.uint8)
    path = tmp_path / "e.cgha"
    sizes = write_compact(path, {"index": (index, "uint", {"num_codes": 3000, "entropy": coder}),
                                 "noise": (noise, "raw", {"entropy": coder})}, {})
    arrays, _ = read_compact(path)
    assert np.array_equal(arrays["index"], index) and np.array_equal(arrays["noise"], noise)
    assert sizes["index"] < index.size * 2 / 4 and sizes["noise"] == 1000
    with pytest.raises(ValueError, match="decodes to"):
        entropy.decompress(entropy.compress(b"x" * 100, coder), coder, 99)  # never more than announced


def _v2_small_file(tmp_path):
    path = tmp_path / "small2.cgha"
    rng = np.random.default_rng(3)
    write_compact(path, {"xyz": (rng.standard_normal((6, 3)), "grid", {"bits": 10, "entropy": "zlib"}),
                         "w": (rng.standard_normal((3, 4)), "qint", {"bits": 6}),
                         "index": (np.repeat([1, 4], 20), "uint", {"num_codes": 5, "entropy": "lzma"})}, {"k": 5})
    return path


def test_v2_truncations_and_bit_flips_fail_with_one_line(tmp_path):
    path = _v2_small_file(tmp_path)
    blob = path.read_bytes()
    assert b'"entropy":"lzma"' in blob and b'"entropy":"zlib"' in blob
    bad = tmp_path / "bad.cgha"
    for length in range(len(blob)):
        bad.write_bytes(blob[:length])
        with pytest.raises(CheckpointError, match="bad.cgha"):
            read_compact(bad)
    for bit in range(0, len(blob) * 8, 3):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError) as info:
            read_compact(bad)
        assert "bad.cgha" in str(info.value) and "\n" not in str(info.value)


def test_damaged_entropy_stream_with_valid_checksum_is_a_clear_error(tmp_path):
    blob = bytearray(_v2_small_file(tmp_path).read_bytes())
    blob[-6] ^= 0xFF  # inside the last array's lzma stream
    blob[-4:] = struct.pack("<I", zlib.crc32(bytes(blob[:-4])))
    bad = tmp_path / "lzma.cgha"
    bad.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="lzma.cgha has a malformed array entry"):
        read_compact(bad)


def test_version_1_file_written_by_the_old_writer_still_loads():
    # tests/fixtures/make_compact_v1_fixture.py wrote both files with the format-1 code (commit ebc63ef).
    path = FIXTURES / "compact_v1_tiny.cgha"
    assert struct.unpack_from("<H", path.read_bytes(), 4)[0] == 1 < FORMAT_VERSION
    model, post_render, metadata = load_compact_avatar(path, CPU)
    expected = np.load(FIXTURES / "compact_v1_tiny_decoded.npz")
    decoded = {**{f"model.{k}": v for k, v in model.state_dict().items()},
               **{f"supres.{k}": v for k, v in post_render.state_dict().items()}}
    assert sorted(decoded) == sorted(expected.files)
    for key, value in decoded.items():
        # Bit-equal but for a last-place difference: the opacity logit goes through log, whose vectorised CPU kernel
        # rounds differently by instruction set (1 ulp on the CI machine against the machine that wrote the fixture).
        np.testing.assert_allclose(value.numpy(), expected[key], rtol=1e-6, atol=1e-6, err_msg=key)


# ------------------------------------------------------------------------------------------ avatar order
def _tiny_avatar(groups, count=120, seed=0):
    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml",
                      [*TINY, "compact.codebook_size=8", f"compact.groups=[{','.join(groups)}]"], stage="gaussianhead")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GaussianHeadModule(cfg.gaussianheadmodule, 0.4 * torch.randn(count, 3, generator=generator),
                               torch.randn(count, 128, generator=generator), torch.randn(68, 3, generator=generator))
    with torch.no_grad():  # distinct attributes per Gaussian, so a mis-paired one changes the image
        model.opacity.copy_(2 * torch.randn(count, 1, generator=generator))
        model.scales.add_(0.5 * torch.randn(count, 3, generator=generator))
        model.rotation.add_(0.5 * torch.randn(count, 4, generator=generator))
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(model))
    quantizer.initialise({key: value.detach() for key, value in model.canonical_attributes().items()})
    return cfg, model, SuperResolutionModule(cfg.supresmodule).eval(), quantizer


def _render(model, post_render, attributes=None):
    viewmat = torch.eye(4)[None]
    viewmat[0, 2, 3] = 3.0  # the head 3 units in front of the camera
    Ks = torch.tensor([[[96.0, 0, 32], [0, 96.0, 32], [0, 0, 1]]])
    with torch.no_grad():
        frame = render_frame(model, post_render, torch.zeros(1, 16), torch.zeros(1, 6), torch.ones(1, 1), viewmat, Ks,
                             64, "auto", attributes=attributes)
    return frame.render


@pytest.mark.parametrize("groups", [["scale_rot", "feature"], ["scale_rot"]])
def test_morton_sorted_file_renders_as_the_unsorted_model(tmp_path, groups):
    cfg, model, post_render, quantizer = _tiny_avatar(groups)
    store = CompactStoreConfig(positions="fp32", codebooks="fp32", attributes="fp32", network="fp32",
                               opacity="fp32", entropy="lzma")
    path = tmp_path / "sorted.cgha"
    save_compact_avatar(path, model, post_render, quantizer, store)
    decoded, decoded_post, _ = load_compact_avatar(path, CPU)
    order = torch.from_numpy(morton_order(model.xyz.detach().numpy(), store.position_bits))
    assert not torch.equal(order, torch.arange(len(order)))  # the file really is in another order
    assert torch.equal(decoded.xyz, model.xyz[order])
    expected = _render(model, post_render, quantizer.quantized_attributes(model.canonical_attributes()))
    torch.testing.assert_close(_render(decoded, decoded_post), expected, atol=2e-5, rtol=0)
    # The comparison catches one array left in the old order (here opacity).
    with torch.no_grad():
        decoded.opacity.copy_(decoded.opacity[torch.argsort(order)])
    assert (_render(decoded, decoded_post) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_write_smaller_files_that_load(tmp_path, preset):
    cfg, model, post_render, quantizer = _tiny_avatar(["scale_rot", "feature"], count=400)
    preset_cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml",
                             [*TINY, *preset_overrides(preset)], stage="gaussianhead")
    v1 = CompactStoreConfig(positions="fp16", codebooks="fp16", network="fp16", opacity="uint8", entropy="none")
    sizes = {}
    for name, store in (("v1", v1), (preset, preset_cfg.compact.store)):
        save_compact_avatar(tmp_path / f"{name}.cgha", model, post_render, quantizer, store)
        sizes[name] = (tmp_path / f"{name}.cgha").stat().st_size
    decoded, _, metadata = load_compact_avatar(tmp_path / f"{preset}.cgha", CPU)
    assert metadata["store"] == vars(preset_cfg.compact.store) and decoded.num_gaussians == 400
    if preset == "lossless":  # format 1's precisions, entropy-coded: the very avatar format 1 decodes to
        reference, _, _ = load_compact_avatar(tmp_path / "v1.cgha", CPU)
        torch.testing.assert_close(decoded.state_dict(), reference.state_dict(), rtol=0, atol=0)
        assert sizes[preset] < sizes["v1"]
    else:
        assert sizes[preset] < 0.8 * sizes["v1"]
    with pytest.raises(ConfigError, match="unknown compact preset"):
        preset_overrides("x1000")


@pytest.mark.parametrize("config", ["train_gaussianhead_synthetic.yaml", "train_gaussianhead_N031.yaml"])
def test_gha_scale_configs_default_to_the_fine_preset_and_lossless_undoes_it(config):
    # docs/compaction.md measures `fine` as these configs' file; the `lossless` preset must give back the dataclass
    # default (format 1's precisions, lzma-coded) whatever the config sets.
    def store(overrides):
        return vars(load_config(TrainConfig, ROOT / "config" / config, overrides, stage="gaussianhead").compact.store)
    assert store([]) == store(preset_overrides("fine")) != vars(CompactStoreConfig())
    assert store(preset_overrides("lossless")) == vars(CompactStoreConfig())


@pytest.mark.parametrize("preset", ["fine", "x40"])
def test_post_training_encodings_of_a_preset_write_the_trained_presets_layout(preset, monkeypatch):
    # benchmarks/bench_compact_ptq.py re-encodes a trained avatar "as preset X": that must be the file a run trained
    # with X's overrides writes, or its measured loss is another file's.
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as `python benchmarks/bench_compact_ptq.py` runs it
    spec = importlib.util.spec_from_file_location("bench_compact_ptq", ROOT / "benchmarks" / "bench_compact_ptq.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    trained = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic.yaml", preset_overrides(preset),
                          stage="gaussianhead").compact.store
    store, recluster = bench.VARIANTS[preset]
    assert vars(CompactStoreConfig(**store)) == vars(trained) and recluster is None

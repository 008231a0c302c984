"""Benchmark of cgha.render.gaussians.rasterize_gaussians: wrapper overhead over gsplat, and the CPU twin.

GPU (needs CUDA + gsplat): GHA scale, 100k Gaussians with 32 channels in a head-sized blob, 512^2 and 2048^2,
B = 1 and 4. For each, forward (no grad) and forward+backward time of
  - ``wrapper``: ``rasterize_gaussians(..., backend="gsplat")`` (image, alpha, depth, radii, means2d), with its
    default NaN/inf check of the inputs, and ``wrapper_unchecked`` with ``check_finite=False``;
  - ``direct``: ``gsplat.rasterization`` with the same work (``packed=False``, ``render_mode="RGB+D"``, all 33
    channels in one pass) -> the overhead % is wrapper vs this;
  - ``gsplat_default``: ``gsplat.rasterization`` with its defaults (packed, RGB only: no depth) and no background
    (packed mode rejects batched backgrounds), for reference.
CPU: the pure-PyTorch twin at 64^2, 2k Gaussians, 32 channels, B = 1 and 4.

Timing: CUDA events around each call after warm-up, median of repeats, wrapper and direct interleaved.
Prints a table and writes JSON (``--out``).

    python benchmarks/bench_render.py --out bench_render.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


from common import markdown_table  # noqa: E402
from cgha.render.gaussians import gsplat_available, rasterize_gaussians  # noqa: E402


def head_scene(B, N, C, width, device, seed=0):
    """Gaussians on and near a sphere of radius 0.12 (a ~0.25-unit head) 1 unit in front of the camera."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(B, N, 3, generator=g)
    means = 0.12 * direction / direction.norm(dim=-1, keepdim=True) + 0.01 * torch.randn(B, N, 3, generator=g)
    scene = {
        "means": means,
        "quats": torch.randn(B, N, 4, generator=g),
        "scales": torch.exp(math.log(1e-3) + torch.rand(B, N, 3, generator=g) * math.log(10.0)),
        "opacities": 0.05 + 0.95 * torch.rand(B, N, generator=g),
        "features": torch.rand(B, N, C, generator=g),
        "backgrounds": torch.ones(B, C),
    }
    viewmats = torch.eye(4).repeat(B, 1, 1)
    viewmats[:, 2, 3] = 1.0
    f = 2.5 * width
    scene["viewmats"] = viewmats
    scene["Ks"] = torch.tensor([[f, 0.0, width / 2], [0.0, f, width / 2], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
    return {k: v.to(device).contiguous() for k, v in scene.items()}


PARAMS = ("means", "quats", "scales", "opacities", "features")


def _wrapper_call(s, size, check_finite=True):
    def call():
        out = rasterize_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["features"],
                                  s["viewmats"], s["Ks"], size, size, backgrounds=s["backgrounds"], backend="gsplat",
                                  check_finite=check_finite)
        return out["image"]
    return call


def _direct_call(s, size, default=False):
    import gsplat

    C = s["features"].shape[-1]
    if default:
        # gsplat's packed mode cannot take per-image backgrounds with batch dimensions, so none here.
        kwargs, bg = {}, None
    else:
        kwargs, bg = dict(packed=False, render_mode="RGB+D", channel_chunk=C + 1), s["backgrounds"][:, None]

    def call():
        colors, _, _ = gsplat.rasterization(s["means"], s["quats"], s["scales"], s["opacities"], s["features"],
                                            s["viewmats"][:, None], s["Ks"][:, None], size, size,
                                            backgrounds=bg, **kwargs)
        return colors[:, 0, ..., :C].permute(0, 3, 1, 2)  # the same image view the wrapper returns
    return call


def _time_cuda(fn, grad_nhwc=None):
    """Milliseconds of one call (forward, or forward + backward of <image, grad>), measured with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    if grad_nhwc is None:
        with torch.no_grad():
            fn()
    else:
        image = fn()
        torch.autograd.backward(image, grad_nhwc.permute(0, 3, 1, 2))
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def bench_gpu(size, B, N, C, warmup, repeats):
    scene = head_scene(B, N, C, size, "cuda")
    calls = {
        "wrapper": _wrapper_call(scene, size),
        "wrapper_unchecked": _wrapper_call(scene, size, check_finite=False),
        "direct": _direct_call(scene, size),
        "gsplat_default": _direct_call(scene, size, default=True),
    }
    with torch.no_grad():
        diff = (calls["wrapper"]() - calls["direct"]()).abs().max().item()
    # Upstream gradient laid out like the image (channels last), as an elementwise loss would produce it.
    grad_nhwc = torch.rand(B, size, size, C, device="cuda")
    row = {"resolution": size, "B": B, "N": N, "C": C, "max_abs_diff_wrapper_vs_direct": diff}
    for mode in ("forward", "forward_backward"):
        for p in PARAMS:
            scene[p].requires_grad_(mode == "forward_backward")
        g = grad_nhwc if mode == "forward_backward" else None
        times = {name: [] for name in calls}
        for _ in range(warmup):
            for fn in calls.values():
                _time_cuda(fn, g)
        for i in range(repeats):
            names = list(calls) if i % 2 == 0 else list(reversed(calls))  # interleave to cancel drift
            for name in names:
                for p in PARAMS:
                    scene[p].grad = None
                times[name].append(_time_cuda(calls[name], g))
        for name, values in times.items():
            row[f"{mode}_{name}_ms"] = statistics.median(values)
        row[f"{mode}_overhead_pct"] = 100.0 * (row[f"{mode}_wrapper_ms"] / row[f"{mode}_direct_ms"] - 1.0)
        row[f"{mode}_unchecked_overhead_pct"] = 100.0 * (row[f"{mode}_wrapper_unchecked_ms"]
                                                         / row[f"{mode}_direct_ms"] - 1.0)
    for p in PARAMS:
        scene[p].grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _time_cuda(calls["wrapper"], grad_nhwc)
    row["forward_backward_wrapper_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    del scene, calls, grad_nhwc
    torch.cuda.empty_cache()
    return row


def bench_cpu(size, B, N, C, warmup, repeats):
    scene = head_scene(B, N, C, size, "cpu")
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "features", "viewmats", "Ks")]
    row = {"resolution": size, "B": B, "N": N, "C": C, "threads": torch.get_num_threads()}
    for mode in ("forward", "forward_backward"):
        for p in PARAMS:
            scene[p].requires_grad_(mode == "forward_backward")
        times = []
        for i in range(warmup + repeats):
            for p in PARAMS:
                scene[p].grad = None
            t0 = time.perf_counter()
            if mode == "forward":
                with torch.no_grad():
                    rasterize_gaussians(*args, size, size, backgrounds=scene["backgrounds"], backend="torch")
            else:
                out = rasterize_gaussians(*args, size, size, backgrounds=scene["backgrounds"], backend="torch")
                out["image"].sum().backward()
            if i >= warmup:
                times.append(1e3 * (time.perf_counter() - t0))
        row[f"{mode}_ms"] = statistics.median(times)
    with torch.no_grad():
        out = rasterize_gaussians(*args, size, size, backgrounds=scene["backgrounds"], backend="torch")
    row["drawn_gaussians"] = int((out["radii"] > 0).sum())
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "gpu_rows": [],
        "cpu_rows": [],
    }
    if not args.skip_gpu and torch.cuda.is_available() and gsplat_available():
        import gsplat

        result["device"] = torch.cuda.get_device_name()
        result["gsplat"] = gsplat.__version__
        for size in (512, 2048):
            for B in (1, 4):
                result["gpu_rows"].append(bench_gpu(size, B, args.gaussians, args.channels, args.warmup,
                                                    args.repeats))
                print("measured", json.dumps(result["gpu_rows"][-1]), file=sys.stderr, flush=True)
    else:
        result["device"] = "cpu only (no CUDA or no gsplat): GPU rows skipped"
    if not args.skip_cpu:
        for B in (1, 4):
            result["cpu_rows"].append(bench_cpu(64, B, 2000, args.channels, warmup=2, repeats=10))
            print("measured", json.dumps(result["cpu_rows"][-1]), file=sys.stderr, flush=True)

    if result["gpu_rows"]:
        gpu_cols = [
            ("res", "resolution", "{}"), ("B", "B", "{}"),
            ("fwd wrapper ms", "forward_wrapper_ms", "{:.3f}"), ("fwd direct ms", "forward_direct_ms", "{:.3f}"),
            ("fwd overhead %", "forward_overhead_pct", "{:+.1f}"),
            ("fwd overhead unchecked %", "forward_unchecked_overhead_pct", "{:+.1f}"),
            ("fwd+bwd wrapper ms", "forward_backward_wrapper_ms", "{:.3f}"),
            ("fwd+bwd direct ms", "forward_backward_direct_ms", "{:.3f}"),
            ("fwd+bwd overhead %", "forward_backward_overhead_pct", "{:+.1f}"),
            ("fwd+bwd overhead unchecked %", "forward_backward_unchecked_overhead_pct", "{:+.1f}"),
            ("gsplat default fwd ms", "forward_gsplat_default_ms", "{:.3f}"),
            ("gsplat default fwd+bwd ms", "forward_backward_gsplat_default_ms", "{:.3f}"),
            ("fwd+bwd peak MiB", "forward_backward_wrapper_peak_mib", "{:.0f}"),
        ]
        print(markdown_table(f"GPU: {result['device']}, gsplat {result.get('gsplat')}, torch {result['torch']}, "
                     f"N={args.gaussians}, C={args.channels}", gpu_cols, result["gpu_rows"]))
        print()
    if result["cpu_rows"]:
        cpu_cols = [("res", "resolution", "{}"), ("B", "B", "{}"), ("N", "N", "{}"), ("C", "C", "{}"),
                    ("threads", "threads", "{}"), ("fwd ms", "forward_ms", "{:.1f}"),
                    ("fwd+bwd ms", "forward_backward_ms", "{:.1f}"), ("drawn", "drawn_gaussians", "{}")]
        print(markdown_table(f"CPU torch twin: {result['cpu']}", cpu_cols, result["cpu_rows"]))
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

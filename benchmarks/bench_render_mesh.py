"""Benchmark of cgha.render.mesh.rasterize_mesh: the GPU target and the synthetic generator's CPU case.

GPU (issue 3's target: forward+backward at most 10 ms on an H100): a ~100k-face UV sphere of radius 0.125 (head
sized) 1 unit in front of 4 cameras at 256^2 (B = 4, each view rotated about the head), f = 2.4 * width, so the
head covers ~60 % of the image width as in GHA's low-resolution mesh stage. Rows:
  - ``hard+soft``: attrs (A channels), mask, depth, normals, face_ids, bary and soft_mask; forward+backward
    takes the gradient of <attrs, w1> + <soft_mask, w2> w.r.t. vertices and attributes;
  - ``hard``: the same with ``soft=False`` (loss on attrs only), to show what the soft path costs.
Timing: host clock between ``torch.cuda.synchronize()`` calls after warm-up, median of repeats; peak memory is
``torch.cuda.max_memory_allocated`` above the inputs during one forward+backward. With ``--profile`` (default
on GPU) the ops taking the most GPU time in one forward+backward are listed too.

CPU: the synthetic generator's case, a ~40k-face sphere at 512^2, one view, hard outputs only (``soft=False``),
7 attribute channels, no grad; and the GPU case's hard+soft forward+backward for reference.

Backend (``--backend auto|triton|torch``, default auto): what the GPU rows run, recorded in each row as the backend
that ran; on CUDA ``auto`` is the Triton kernels of cgha/kernels/mesh_raster.py, ``torch`` the pure-PyTorch twin.

Experiment (GPU, last, ``--no-compile-experiment`` skips it): the torch backend's soft blocks' per-slot math through
``torch.compile`` (not what the library does), checked against eager and timed.

Prints tables and writes JSON (``--out``).

    python benchmarks/bench_render_mesh.py --out bench_mesh.json [--backend torch]
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


from benchmarks.common import markdown_table  # noqa: E402
from cgha.render import mesh as mesh_mod  # noqa: E402
from cgha.render.mesh import rasterize_mesh  # noqa: E402
from cgha.utils.primitives import uv_sphere  # noqa: E402


def head_scene(B, size, n_lat, n_lon, A, device, seed=0):
    """Sphere of radius 0.125 at the origin seen by B cameras 1 unit away, rotated about y by 30 degrees apart."""
    verts, faces = uv_sphere(n_lat, n_lon, 0.125)
    g = torch.Generator().manual_seed(seed)
    viewmats = torch.eye(4).repeat(B, 1, 1)
    for b in range(B):
        a = math.radians(30.0 * b)
        viewmats[b, :3, :3] = torch.tensor([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0],
                                            [math.sin(a), 0.0, math.cos(a)]])
    viewmats[:, 2, 3] = 1.0
    f = 2.4 * size
    Ks = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
    scene = {
        "verts": verts[None].repeat(B, 1, 1),
        "faces": faces,
        "vert_attrs": torch.rand(B, verts.shape[0], A, generator=g),
        "viewmats": viewmats,
        "Ks": Ks,
        "w_attrs": torch.rand(B, A, size, size, generator=g),
        "w_soft": torch.rand(B, 1, size, size, generator=g),
    }
    return {k: v.to(device).contiguous() for k, v in scene.items()}


def _call(s, size, soft, grad, backend="auto"):
    """One rasterization (and backward when ``grad``) of the scene."""
    verts = s["verts"].detach().requires_grad_(grad)
    attrs = s["vert_attrs"].detach().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        out = rasterize_mesh(verts, s["faces"], attrs, s["viewmats"], s["Ks"], size, size, soft=soft,
                             backend=backend)
        if grad:
            loss = (out["attrs"] * s["w_attrs"]).sum()
            if soft:
                loss = loss + (out["soft_mask"] * s["w_soft"]).sum()
            loss.backward()
    return out


def _time(fn, warmup, repeats, cuda):
    """Median and min milliseconds of ``fn()``, synchronizing the GPU around each call."""
    times = []
    for i in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), min(times)


def _scene_stats(s, size):
    """Faces, covered pixels and soft-path slots (fragments incl. padding, as the torch backend pads) of the scene."""
    with torch.no_grad():
        out = rasterize_mesh(s["verts"], s["faces"], None, s["viewmats"], s["Ks"], size, size, backend="torch")
        B, F = s["verts"].shape[0], s["faces"].shape[0]
        cam = mesh_mod._to_camera(s["verts"], s["viewmats"])
        uvz = mesh_mod._corner_uvz(cam, s["faces"], s["Ks"])
        boxes = mesh_mod._face_boxes(uvz, B, F, size, size, 0.01, (mesh_mod._SOFT_RADIUS * 1.0,))[0]
        plan = mesh_mod._soft_plan(boxes, size, size)
        slots = sum((e - st) * bh * bw for st, e, bh, bw in plan["chunks"])
        real = int((plan["bw"] * plan["bh"]).sum())
    return {"faces": F, "covered_pixels": int(out["mask"].sum()), "coverage": float(out["mask"].mean()),
            "soft_windows": int(plan["gid"].numel()), "soft_fragments": real, "soft_slots": slots,
            "soft_chunks": len(plan["chunks"])}


def resolved_backend(backend, device):
    """The backend ``rasterize_mesh`` runs for ``backend`` on float32 tensors of ``device``."""
    from cgha.kernels import resolve_backend

    return resolve_backend(backend, torch.empty(0, device=device))


def bench_gpu(args):
    size, B = args.size, args.views
    s = head_scene(B, size, args.n_lat, args.n_lon, args.attrs, "cuda")
    backend = args.backend
    row = {"backend": resolved_backend(backend, "cuda"), "resolution": size, "B": B, "A": args.attrs,
           **_scene_stats(s, size)}
    for name, soft in (("hard+soft", True), ("hard", False)):
        for mode, grad in (("forward", False), ("forward_backward", True)):
            med, best = _time(lambda: _call(s, size, soft, grad, backend), args.warmup, args.repeats, True)
            row[f"{name}_{mode}_ms"] = med
            row[f"{name}_{mode}_min_ms"] = best
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _call(s, size, True, True, backend)
    torch.cuda.synchronize()
    row["hard+soft_forward_backward_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    if args.profile:
        row["profile"] = _profile(lambda: _call(s, size, True, True, backend))
    return row


def _profile(fn):
    """Top ops by self GPU time in one forward+backward, and the op / kernel counts."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.key_averages()

    def gpu_us(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    ops = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]  # kernels are listed by op
    top = sorted(ops, key=gpu_us, reverse=True)[:15]
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return {
        "gpu_busy_ms": sum(k.time_range.elapsed_us() for k in kernels) / 1e3,
        "kernels": len(kernels),
        "aten_ops": sum(e.count for e in ops if e.key.startswith("aten::")),
        "top": [{"op": e.key, "calls": e.count, "gpu_ms": gpu_us(e) / 1e3} for e in top],
    }


def bench_compiled_soft(args, device="cuda"):
    """Experiment, not the library's default: the soft blocks' per-slot math through ``torch.compile``.

    Swaps ``_soft_fragments`` and ``_soft_fragments_backward`` for compiled versions (dynamic shapes) for the
    duration of the measurement, checks that soft_mask and the gradients match the eager ones, and times the
    hard+soft forward+backward. Any failure is recorded instead of raised.
    """
    size, B = args.size, args.views
    s = head_scene(B, size, args.n_lat, args.n_lon, args.attrs, device)
    row = {"backend": "torch", "resolution": size, "B": B}
    eager = (mesh_mod._soft_fragments, mesh_mod._soft_fragments_backward)

    def grads():
        verts = s["verts"].detach().requires_grad_(True)
        out = rasterize_mesh(verts, s["faces"], None, s["viewmats"], s["Ks"], size, size, backend="torch")
        (out["soft_mask"] * s["w_soft"]).sum().backward()
        return out["soft_mask"].detach(), verts.grad

    try:
        ref_mask, ref_grad = grads()
        mesh_mod._soft_fragments = torch.compile(eager[0], dynamic=True)
        mesh_mod._soft_fragments_backward = torch.compile(eager[1], dynamic=True)
        t0 = time.perf_counter()
        mask, grad = grads()
        row["first_call_s"] = time.perf_counter() - t0
        row["soft_mask_max_abs_diff"] = float((mask - ref_mask).abs().max())
        row["verts_grad_rel_diff"] = float((grad - ref_grad).norm() / ref_grad.norm())
        cuda = device == "cuda"
        row["hard+soft_forward_backward_ms"], row["hard+soft_forward_backward_min_ms"] = _time(
            lambda: _call(s, size, True, True, "torch"), args.warmup, args.repeats, cuda)
    except Exception as exc:  # an experiment: report, do not fail the benchmark
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        mesh_mod._soft_fragments, mesh_mod._soft_fragments_backward = eager
    return row


def bench_cpu(args):
    rows = []
    # The Triton kernels only run on CPUs in Triton's (very slow) interpreter: CPU rows time the twin for "triton".
    backend = "torch" if args.backend == "triton" else args.backend
    resolved = resolved_backend(backend, "cpu")
    # The synthetic generator's case: one view at 512^2 of a ~40k-face head, hard outputs only.
    s = head_scene(1, 512, 100, 200, 7, "cpu")
    row = {"case": "generator: 512^2, B=1, hard only, no grad", "backend": resolved, "resolution": 512, "B": 1,
           "A": 7, "faces": s["faces"].shape[0], "threads": torch.get_num_threads()}
    row["ms"], row["min_ms"] = _time(lambda: _call(s, 512, False, False, backend), 2, args.cpu_repeats, False)
    rows.append(row)
    s = head_scene(args.views, args.size, args.n_lat, args.n_lon, args.attrs, "cpu")
    row = {"case": "GPU case on CPU: hard+soft, forward+backward", "backend": resolved, "resolution": args.size,
           "B": args.views, "A": args.attrs, "faces": s["faces"].shape[0], "threads": torch.get_num_threads()}
    row["ms"], row["min_ms"] = _time(lambda: _call(s, args.size, True, True, backend), 1, 3, False)
    rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--attrs", type=int, default=3, help="attribute channels interpolated (and in the loss)")
    parser.add_argument("--n-lat", type=int, default=200, help="UV sphere rings (200 x 250: 99,500 faces)")
    parser.add_argument("--n-lon", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cpu-repeats", type=int, default=10)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--no-compile-experiment", dest="compile_experiment", action="store_false",
                        help="skip timing the soft blocks through torch.compile (GPU only; compiling takes a while)")
    parser.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto",
                        help="rasterize_mesh backend of the GPU rows (auto: the Triton kernels on CUDA); CPU rows "
                             "always run the twin")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "command": " ".join(sys.argv),
        "gpu_rows": [],
        "cpu_rows": [],
    }
    if not args.skip_gpu and torch.cuda.is_available():
        result["device"] = torch.cuda.get_device_name()
        result["gpu_rows"].append(bench_gpu(args))
        print("measured", json.dumps(result["gpu_rows"][-1]), file=sys.stderr, flush=True)
    else:
        result["device"] = "cpu only (no CUDA): GPU rows skipped"
    if not args.skip_cpu:
        result["cpu_rows"] = bench_cpu(args)
        print("measured", json.dumps(result["cpu_rows"]), file=sys.stderr, flush=True)
    if args.out:  # what is measured so far, in case the experiment below runs out of time
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    if result["gpu_rows"] and args.compile_experiment:
        result["compiled_soft_experiment"] = bench_compiled_soft(args)
        print("measured", json.dumps(result["compiled_soft_experiment"]), file=sys.stderr, flush=True)

    if result["gpu_rows"]:
        row = result["gpu_rows"][0]
        cols = [("backend", "backend", "{}"), ("res", "resolution", "{}"), ("B", "B", "{}"),
                ("faces", "faces", "{}"),
                ("covered px", "covered_pixels", "{}"), ("soft fragments", "soft_fragments", "{}"),
                ("fwd ms", "hard+soft_forward_ms", "{:.2f}"),
                ("fwd+bwd ms", "hard+soft_forward_backward_ms", "{:.2f}"),
                ("hard-only fwd ms", "hard_forward_ms", "{:.2f}"),
                ("hard-only fwd+bwd ms", "hard_forward_backward_ms", "{:.2f}"),
                ("fwd+bwd peak MiB", "hard+soft_forward_backward_peak_mib", "{:.0f}")]
        print(markdown_table(f"GPU: {result['device']}, torch {result['torch']} (hard + soft_mask, loss on attrs and "
                     f"soft_mask; medians)", cols, result["gpu_rows"]))
        if "profile" in row:
            prof = row["profile"]
            print(f"\none forward+backward: {prof['kernels']} kernels, {prof['aten_ops']} aten ops, "
                  f"{prof['gpu_busy_ms']:.2f} ms of kernel time")
            print(markdown_table("top ops by GPU time", [("op", "op", "{}"), ("calls", "calls", "{}"),
                                                 ("GPU ms", "gpu_ms", "{:.3f}")], prof["top"]))
        print()
    if result["cpu_rows"]:
        cols = [("case", "case", "{}"), ("backend", "backend", "{}"), ("res", "resolution", "{}"), ("B", "B", "{}"),
                ("faces", "faces", "{}"),
                ("threads", "threads", "{}"), ("ms (median)", "ms", "{:.1f}"), ("ms (min)", "min_ms", "{:.1f}")]
        print(markdown_table(f"CPU: {result['cpu']}", cols, result["cpu_rows"]))
    exp = result.get("compiled_soft_experiment")
    if exp:
        print("\nexperiment, soft blocks through torch.compile:",
              exp.get("error") or (f"fwd+bwd {exp['hard+soft_forward_backward_ms']:.2f} ms (median), first call "
                                   f"{exp['first_call_s']:.1f} s, soft_mask diff {exp['soft_mask_max_abs_diff']:.1e}, "
                                   f"grad rel diff {exp['verts_grad_rel_diff']:.1e}"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

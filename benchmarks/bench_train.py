"""Benchmark of one Gaussian-head training step at GHA scale, with a breakdown.

GHA scale: 100k Gaussians + 3000 mouth points, GHA's network sizes (config/train_gaussianhead_N031.yaml: 64
expression coefficients, 32 colour channels, super-resolution capacity 32), 512^2 render -> 2048^2 output,
batch 1, L1 losses only (no LPIPS). The scene is a head-sized ellipsoid of Gaussians seen from 1 unit away.
Reports the full step (no synchronisation inside) and a synchronised breakdown: generate / render /
super-resolution / backward / optimizer, plus peak CUDA memory. Prints a table and writes JSON (--out).

    python benchmarks/bench_train.py --out bench_train.json [--amp] [--compact] [--no-cuda-graphs]
                                     [--profile profile.txt]
"""
from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from common import gha_scale_head  # noqa: E402
from cgha.avatar.inference import render_batch, render_gaussians  # noqa: E402
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec  # noqa: E402
from cgha.config import TrainConfig, load_config  # noqa: E402
from cgha.utils.device import use_fast_training_kernels  # noqa: E402
from cgha.module.super_resolution import SuperResolutionModule  # noqa: E402
from cgha.trainer.gaussian_head_trainer import make_optimizer, stage2_losses  # noqa: E402
from cgha.trainer.augment import random_scale_crop  # noqa: E402


def synthetic_batch(output: int, exp_dim: int, device: torch.device, generator: torch.Generator):
    coarse = output // 4
    focal = 2.1 * coarse
    viewmat = torch.eye(4)
    viewmat[1, 1], viewmat[2, 2], viewmat[2, 3] = -1.0, -1.0, 1.0  # GHA's frontal camera, 1 unit in front
    batch = {
        "exp_coeff": 0.3 * torch.randn(1, exp_dim, generator=generator),
        "pose": torch.zeros(1, 6),
        "scale": torch.full((1, 1), 0.125),
        "exp_id": torch.zeros(1, dtype=torch.long),
        "viewmat": viewmat[None],
        "intrinsics_coarse": torch.tensor([[[focal, 0, coarse / 2], [0, focal, coarse / 2], [0, 0, 1]]]),
        "images": torch.rand(1, 3, output, output, generator=generator),
        "visibles": torch.ones(1, 1, output, output),
        "images_coarse": torch.rand(1, 3, coarse, coarse, generator=generator),
        "visibles_coarse": torch.ones(1, 1, coarse, coarse),
    }
    return {key: value.to(device) for key, value in batch.items()}


def detached_attributes(module) -> dict:
    return {key: value.detach() for key, value in module.canonical_attributes().items()}


def profile_steps(step, steps: int, table_path: Path) -> dict:
    """Per step: wall time, GPU busy time (union of kernel and copy intervals) and GPU operations. The tables of
    operations by GPU and by host time go to `table_path`, a Chrome trace next to it (`.trace.json`)."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) * 1000 / steps
    intervals = sorted((event.time_range.start, event.time_range.end) for event in prof.events()
                       if event.device_type == torch.autograd.DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for begin, finish in intervals:
        busy += max(0.0, finish - max(begin, end))
        end = max(end, finish)
    averages = prof.key_averages()
    table_path.write_text(averages.table(sort_by="self_cuda_time_total", row_limit=60) + "\n"
                          + averages.table(sort_by="self_cpu_time_total", row_limit=40))
    prof.export_chrome_trace(str(table_path.with_suffix(".trace.json")))
    return {"wall_ms": wall, "gpu_busy_ms": busy / 1000 / steps, "kernels": len(intervals) / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--output", type=int, default=2048, help="output resolution (render is 1/4)")
    parser.add_argument("--amp", action="store_true",
                        help="train.amp: bf16 channels-last super-resolution and bf16 Gaussian-head MLPs")
    parser.add_argument("--fp32-head", action="store_true", help="with --amp: keep the Gaussian-head MLPs in fp32")
    parser.add_argument("--compact", action="store_true",
                        help="with codebook quantisation (the config's compact.*): straight-through attributes and "
                             "the per-step codebook refresh; re-assignment is timed apart and amortised over "
                             "compact.assign_every")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="run generate()'s networks and the super-resolution net eagerly (train.cuda_graphs=false)")
    parser.add_argument("--profile", type=Path,
                        help="also profile 5 steps: GPU busy time and kernel launches per step, and the kernels "
                             "by GPU time (table written to this file)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    use_fast_training_kernels(device)

    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_N031.yaml", [f"train.amp={args.amp}"],
                      stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    module = gha_scale_head(cfg, args.gaussians, generator).to(device).use_cuda_graphs(args.cuda_graphs)
    module.amp = args.amp and not args.fp32_head
    supres = SuperResolutionModule(cfg.supresmodule, amp=args.amp).to(device).use_cuda_graphs(args.cuda_graphs)
    delta_poses = torch.nn.Parameter(torch.zeros(16, 6, device=device))
    optimizer = make_optimizer(cfg, module, supres, delta_poses)
    batch = synthetic_batch(args.output, cfg.gaussianheadmodule.exp_coeffs_dim, device, generator)
    rng = random.Random(0)
    quantizer = None
    if args.compact:
        quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(module), seed=0).to(device)
        quantizer.initialise(detached_attributes(module))

    def step():
        attributes = quantizer.quantized_attributes(module.canonical_attributes()) if quantizer else None
        losses, _ = stage2_losses(module, supres, batch, delta_poses, rng, "gsplat", attributes=attributes)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        if quantizer is not None:
            with torch.no_grad():
                quantizer.refresh(detached_attributes(module))

    def timed_step():
        """One step with a synchronisation after each phase: (generate, render, supres+loss, backward, optimizer)."""
        marks = [time.perf_counter()]

        def mark():
            torch.cuda.synchronize()
            marks.append(time.perf_counter())

        pose = batch["pose"] + delta_poses.index_select(0, batch["exp_id"])
        generated = module.generate(batch["exp_coeff"], pose, batch["scale"])
        mark()
        render = render_gaussians(generated, batch["viewmat"], batch["intrinsics_coarse"], args.output // 4, "gsplat")
        mark()
        crop_render, crop_image, crop_visible = random_scale_crop(render, batch["images"], batch["visibles"], rng)
        output = supres(crop_render)
        loss = (torch.nn.functional.l1_loss(output * crop_visible, crop_image * crop_visible)
                + torch.nn.functional.l1_loss(render[:, :3], batch["images_coarse"]))
        mark()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mark()
        optimizer.step()
        mark()
        return [(b - a) * 1000 for a, b in zip(marks, marks[1:])]

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated() / 2**30
    # Reserved memory includes the CUDA graphs' private pools, whose blocks replays reuse without allocating.
    peak_reserved = torch.cuda.max_memory_reserved() / 2**30
    compact = None
    if quantizer is not None:
        reassign = []
        for _ in range(5):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                quantizer.reassign(detached_attributes(module))
            torch.cuda.synchronize()
            reassign.append((time.perf_counter() - start) * 1000)
        compact = {"codebook_sizes": quantizer.codebook_sizes(), "assign_every": cfg.compact.assign_every,
                   "reassign_ms": statistics.median(reassign),
                   "amortised_step_ms": statistics.median(times)
                   + statistics.median(reassign) / cfg.compact.assign_every}
    profile = profile_steps(step, 5, args.profile) if args.profile else None
    phases = [timed_step() for _ in range(args.repeats)]
    names = ["generate", "render", "supres_and_loss", "backward", "optimizer"]
    breakdown = {name: statistics.median(p[i] for p in phases) for i, name in enumerate(names)}
    with torch.no_grad():
        _, render = render_batch(module, supres, batch, None, "gsplat")
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "gaussians": module.num_gaussians,
        "render": args.output // 4,
        "output": args.output,
        "amp": args.amp,
        "head_amp": module.amp,
        "cuda_graphs": args.cuda_graphs,
        "step_ms": statistics.median(times),
        "steps_per_s": 1000 / statistics.median(times),
        "peak_gib": peak,
        "peak_reserved_gib": peak_reserved,
        "breakdown_ms": breakdown,
        "compact": compact,
        "profile": profile,
        "drawn_fraction": float((render[:, :3] < 0.999).any(1).float().mean()),
    }
    print(f"{result['device']}: {result['gaussians']} Gaussians, {result['render']}^2 -> {result['output']}^2, "
          f"amp={args.amp} (head MLPs: {module.amp}), cuda_graphs={args.cuda_graphs}")
    print(f"step {result['step_ms']:.2f} ms ({result['steps_per_s']:.1f} steps/s), peak {peak:.2f} GiB allocated, "
          f"{peak_reserved:.2f} GiB reserved")
    print(" | ".join(f"{name} {value:.2f} ms" for name, value in breakdown.items()))
    if compact is not None:
        print(f"compaction {compact['codebook_sizes']}: re-assignment {compact['reassign_ms']:.2f} ms every "
              f"{compact['assign_every']} steps -> {compact['amortised_step_ms']:.2f} ms per step amortised")
    if profile is not None:
        print(f"profile: GPU busy {profile['gpu_busy_ms']:.2f} ms of {profile['wall_ms']:.2f} ms per step, "
              f"{profile['kernels']:.0f} GPU operations per step (table: {args.profile})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark of one mesh-head training iteration (GHA's stage 1) on a generated or given subject.

Times the real trainer step (landmark terms, reconstruct = geometry MLP + marching tetrahedra + expression/pose
MLPs, multi-view hard + soft rendering, losses, backward, Adam) at the config's grid resolution, with a breakdown,
and reports peak CUDA memory. Prints a table and writes JSON (--out).

    python benchmarks/bench_meshhead.py --config config/train_meshhead_synthetic.yaml --out bench_meshhead.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from cgha.config import TrainConfig, load_config, loss_weights, meshhead_exp_dim  # noqa: E402
from cgha.dataset import MeshDataset  # noqa: E402
from cgha.render.multiview import render_mesh_views  # noqa: E402
from cgha.trainer.mesh_head_trainer import MeshHeadTrainer  # noqa: E402
from cgha.utils.device import resolve_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "train_meshhead_synthetic.yaml"))
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="bench_meshhead_")
    cfg = load_config(TrainConfig, args.config, [*args.overrides, "train.pretrain_sphere_iters=300",
                                                 "train.resume=false", f"recorder.checkpoint_path={scratch}/ck",
                                                 f"recorder.logdir={scratch}/log", f"recorder.result_path={scratch}/res"],
                      stage="meshhead")
    device = resolve_device(cfg.device, cfg.gpu_id)
    dataset = MeshDataset(cfg.dataset, expected_exp_dim=meshhead_exp_dim(cfg.meshheadmodule))
    trainer = MeshHeadTrainer(cfg, device, dataset)
    batch = trainer.to_device(next(iter(trainer.loader)))
    weights = loss_weights(cfg, "meshhead")
    module = trainer.module

    def step():
        losses, _ = trainer.compute_losses(batch)
        total = sum(weights[name] * value for name, value in losses.items())
        trainer.optimizer.zero_grad(set_to_none=True)
        total.backward()
        trainer.optimizer.step()

    def reconstruct():
        with torch.no_grad():
            return module.reconstruct(batch["exp_coeff"], batch["pose"], batch["scale"])

    recon = reconstruct()

    def render():
        with torch.no_grad():
            render_mesh_views(recon["verts"], recon["faces"], recon["colors"], batch["viewmats"], batch["intrinsics"],
                              cfg.dataset.resolution, cfg.render.mesh_sigma)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms = timed(step, device, args.repeats, args.warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "config": args.config,
        "tet_resolution": cfg.meshheadmodule.tet_resolution,
        "tet_vertices": int(module.tet_verts.shape[0]),
        "tets": int(module.tets.shape[0]),
        "mesh_vertices": int(recon["verts"].shape[1]),
        "mesh_faces": int(recon["faces"].shape[0]),
        "views_per_step": int(batch["viewmats"].shape[1]),
        "resolution": cfg.dataset.resolution,
        "step_ms": step_ms,
        "iters_per_s": 1000.0 / step_ms,
        "reconstruct_fwd_ms": timed(reconstruct, device, args.repeats, args.warmup),
        "render_fwd_ms": timed(render, device, args.repeats, args.warmup),
        "peak_mib": peak,
    }
    width = max(map(len, result))
    print("\n".join(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}"
                    for key, value in result.items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

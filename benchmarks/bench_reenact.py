"""Reenactment speed at GHA scale: generate + render + super-resolution per frame, raw vs compact avatar.

103k Gaussians with GHA's N031 network sizes, 512^2 render -> 2048^2 output, batch 1, no gradients. The compact
avatar is written with the default compaction and loaded back, so its timing includes whatever decoding the
loaded model keeps (none: attributes are decoded once at load). Frame rate does not depend on training, so the
avatar is untrained. Prints a table and writes JSON (--out).

    python benchmarks/bench_reenact.py --out bench_reenact.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.common import gha_scale_head  # noqa: E402
from cgha.compact.avatar_file import load_compact_avatar, save_compact_avatar  # noqa: E402
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec  # noqa: E402
from cgha.config import TrainConfig, load_config  # noqa: E402
from cgha.utils.device import use_fast_training_kernels  # noqa: E402
from cgha.module.super_resolution import SuperResolutionModule  # noqa: E402
from cgha.avatar.inference import render_frame  # noqa: E402


def frame_time(module, supres, output: int, repeats: int, warmup: int, device) -> float:
    """Median ms of one reenactment frame (generate + render + super-resolution: the inference path reenactment
    uses, cgha.avatar.inference.render_frame), synchronised."""
    focal = 2.1 * output
    viewmat = torch.eye(4, device=device)
    viewmat[1, 1], viewmat[2, 2], viewmat[2, 3] = -1.0, -1.0, 1.0
    K = torch.tensor([[focal, 0, output / 2], [0, focal, output / 2], [0, 0, 1]], device=device)
    generator = torch.Generator().manual_seed(1)
    exp_dim = module.cfg.exp_coeffs_dim
    times = []
    with torch.no_grad():
        for step in range(warmup + repeats):
            exp = (0.3 * torch.randn(1, exp_dim, generator=generator)).to(device)
            pose = torch.zeros(1, 6, device=device)
            torch.cuda.synchronize()
            start = time.perf_counter()
            render_frame(module, supres, exp, pose, torch.full((1, 1), 0.125, device=device), viewmat[None], K[None],
                         output, "gsplat")
            torch.cuda.synchronize()
            if step >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--output", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    use_fast_training_kernels(device)

    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_N031.yaml", [], stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    raw = gha_scale_head(cfg, args.gaussians, generator).to(device).eval()
    supres = SuperResolutionModule(cfg.supresmodule).to(device).eval()
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(raw)).to(device)
    quantizer.initialise({key: value.detach() for key, value in raw.canonical_attributes().items()})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "avatar.cgha"
        save_compact_avatar(path, raw, supres, quantizer, cfg.compact.store)
        compact, compact_supres, _ = load_compact_avatar(path, device)
    compact.eval()
    compact_supres.eval()

    rows = []
    for name, module, sr in (("raw", raw, supres), ("compact", compact, compact_supres)):
        for amp in (False, True):
            sr.amp = amp
            ms = frame_time(module, sr, args.output, args.repeats, args.warmup, device)
            rows.append({"avatar": name, "amp": amp, "ms_per_frame": ms, "fps": 1000 / ms})
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "gaussians": raw.num_gaussians,
              "render": args.output // 4, "output": args.output, "rows": rows}
    print(f"{result['device']}: {raw.num_gaussians} Gaussians, {args.output // 4}^2 -> {args.output}^2")
    print("| avatar | bf16 SR | ms/frame | FPS |\n|---|---|---|---|")
    print("\n".join(f"| {r['avatar']} | {r['amp']} | {r['ms_per_frame']:.2f} | {r['fps']:.1f} |" for r in rows))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

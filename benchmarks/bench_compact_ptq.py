"""Post-training encodings of one trained avatar: bytes, decode time and quality of compressed-file variants (CPU).

Takes a finished compaction run (its raw `gaussianhead_latest`, `supres_latest`, `quantizer_latest`,
`delta_poses_latest` and `config.yaml`), writes the compressed file once per variant of `compact.store` (and,
for the codebook sweep, with codebooks re-clustered after training by k-means on the trained continuous
attributes, without fine-tuning), loads it back and renders every image of the evaluation splits. Quality is the
PSNR of each variant's output against the reference variant's output (the format-1 defaults: fp16 positions,
codebooks and networks, 8-bit opacity, no entropy coding) and PSNR / SSIM against the ground truth. These are
encodings of one trained avatar, so there are no seeds to repeat.

    python benchmarks/bench_compact_ptq.py --run checkpoints/gaussianhead_synthetic_demo_id0 \\
        --out benchmarks/results/compact_ptq_cpu_2026-12-05.json [--variants name ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from common import json_safe  # noqa: F401,E402  (sys.path: the benchmarks folder)
from cgha.avatar.inference import build_raw_post_render, load_delta_poses, load_model, render_batch
from cgha.compact.avatar_file import load_compact_avatar, save_compact_avatar
from cgha.compact.config import CompactStoreConfig
from cgha.compact.presets import preset_overrides
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.config import TrainConfig, load_config
from cgha.dataset import GaussianDataset
from cgha.dataset.loader import evenly_spaced_indices
from cgha.utils.metrics import psnr, ssim

V1 = {"positions": "fp16", "codebooks": "fp16", "network": "fp16", "opacity": "uint8", "entropy": "none"}
REFERENCE = "v1_fp16"


def preset_store(name: str) -> Dict[str, object]:
    """The store options of ``cgha.compact.presets``' preset ``name`` (its ``compact.store.*`` overrides over the
    format-1 precisions), so a post-training encoding and a trained preset are the same file layout."""
    store = dict(V1)
    for override in preset_overrides(name):
        key, value = override.split("=", 1)
        if key.startswith("compact.store."):
            store[key[len("compact.store."):]] = int(value) if value.isdigit() else value
    return store


# name -> (store options, codebook sizes re-clustered after training or None)
VARIANTS: Dict[str, tuple] = {
    REFERENCE: (V1, None),
    "fp32": ({**V1, "positions": "fp32", "codebooks": "fp32", "network": "fp32", "opacity": "fp32",
              "attributes": "fp32"}, None),
    "v1_lzma": ({**V1, "entropy": "lzma"}, None),
    "v1_zlib": ({**V1, "entropy": "zlib"}, None),
    **{f"grid{b}": ({**V1, "entropy": "lzma", "positions": "grid", "position_bits": b}, None)
       for b in (10, 11, 12, 13, 14, 16)},
    "mlp_int8": ({**V1, "entropy": "lzma", "network": "int8", "post_render": "fp16"}, None),
    "mlp_int6": ({**V1, "entropy": "lzma", "network": "int6", "post_render": "fp16"}, None),
    "mlp_int4": ({**V1, "entropy": "lzma", "network": "int4", "post_render": "fp16"}, None),
    "sr_int8": ({**V1, "entropy": "lzma", "network": "fp16", "post_render": "int8"}, None),
    "sr_int6": ({**V1, "entropy": "lzma", "network": "fp16", "post_render": "int6"}, None),
    "sr_int4": ({**V1, "entropy": "lzma", "network": "fp16", "post_render": "int4"}, None),
    "codebooks_int8": ({**V1, "entropy": "lzma", "codebooks": "int8"}, None),
    "fine": (preset_store("fine"), None),
    "x40": (preset_store("x40"), None),
    "x60": ({**V1, "entropy": "lzma", "positions": "grid", "position_bits": 10, "codebooks": "int8", "network": "int4",
             "post_render": "int4"}, 64),
    **{f"recluster{k}": ({**V1, "entropy": "lzma"}, k) for k in (64, 128, 256, 512)},
}


def parse_variant(text: str) -> tuple:
    """'name:key=value,key=value[:recluster]' -> (name, (store options, K or None)) for ad-hoc variants."""
    name, _, rest = text.partition(":")
    options, _, recluster = rest.partition(":")
    store = dict(V1)
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        store[key] = int(value) if value.isdigit() else value
    return name, (store, int(recluster) if recluster else None)


def render_splits(model, post_render, datasets, indices, delta_poses, device) -> Dict[str, torch.Tensor]:
    """Outputs [M, 3, R, R] in [0, 1] on the CPU of every image of every split (pose offsets as in evaluation)."""
    out = {}
    with torch.no_grad():
        for split, dataset in datasets.items():
            images = []
            for index in indices[split]:
                batch = {key: value[None].to(device) for key, value in dataset[index].items()}
                offsets = delta_poses if split != "test_frames" else None
                _, render = render_batch(model, post_render, batch, offsets, "auto")
                images.append(post_render(render).clamp(0, 1).float().cpu())
            out[split] = torch.cat(images)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="checkpoint folder of a finished compaction run")
    parser.add_argument("--variants", nargs="*", help="names from VARIANTS (default: all) or 'name:key=v,...[:K]'")
    parser.add_argument("--max-images", type=int, default=0, help="per split, evenly spaced (0: all)")
    parser.add_argument("--splits", nargs="*", default=["test_cameras", "test_frames", "out_of_rig"])
    parser.add_argument("--save", type=Path, help="folder to keep every variant's compressed file in (NAME.cgha)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where files are decoded and rendered")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_config(TrainConfig, args.run / "config.yaml", stage="gaussianhead")
    device = torch.device(args.device)
    model = load_model(cfg, args.run / "gaussianhead_latest", device).eval()
    supres = build_raw_post_render(cfg, model, args.run / "supres_latest").to(device).eval()
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(model), seed=cfg.train.seed)
    quantizer.load_state_dict(torch.load(args.run / "quantizer_latest", weights_only=True))
    quantizer.to(device)
    datasets, subject = {}, None
    for split in args.splits:
        dataset = GaussianDataset(cfg.dataset, split=split, views="all", expected_exp_dim=model.expression_dim,
                                  exp_dim_key="the avatar's expression dimension", subject=subject)
        subject = dataset.subject
        if len(dataset):
            datasets[split] = dataset
    delta_poses = load_delta_poses(args.run / "delta_poses_latest", next(iter(datasets.values())).num_frames)
    indices = {split: evenly_spaced_indices(len(dataset), args.max_images) for split, dataset in datasets.items()}
    targets = {split: torch.stack([dataset[i]["images"] for i in indices[split]]).float()
               for split, dataset in datasets.items()}
    chosen = dict(VARIANTS) if not args.variants else dict(
        (name, VARIANTS[name]) if name in VARIANTS else parse_variant(name) for name in args.variants)
    chosen = {REFERENCE: VARIANTS[REFERENCE], **chosen}  # the reference renders come first
    rows: List[Dict] = []
    reference: Optional[Dict[str, torch.Tensor]] = None
    with tempfile.TemporaryDirectory() as folder:
        for name, (options, recluster) in chosen.items():
            store = CompactStoreConfig(**options)
            vq = quantizer
            if recluster is not None:
                vq = GroupedQuantizer(cfg.compact.groups, GroupSpec.of(model), recluster, {}, cfg.compact.kmeans_iters,
                                      cfg.train.seed).to(device)
                vq.initialise({key: value.detach() for key, value in model.canonical_attributes().items()})
            path = Path(folder) / f"{name}.cgha"
            start = time.perf_counter()
            parts = save_compact_avatar(path, model, supres, vq, store)
            write_s = time.perf_counter() - start
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / path.name).write_bytes(path.read_bytes())
            start = time.perf_counter()
            decoded, decoded_sr, _ = load_compact_avatar(path, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            load_s = time.perf_counter() - start
            outputs = render_splits(decoded.eval(), decoded_sr.eval(), datasets, indices, delta_poses.to(device),
                                    device)
            if reference is None:
                reference = outputs
            row = {"name": name, "store": dataclasses.asdict(store), "recluster": recluster,
                   "bytes": os.path.getsize(path), "parts": parts, "write_s": write_s, "load_s": load_s,
                   "splits": {}}
            for split, images in outputs.items():
                row["splits"][split] = {
                    "psnr_vs_reference": float(psnr(images, reference[split]).mean()),
                    "psnr_vs_reference_min": float(psnr(images, reference[split]).min()),
                    "psnr": float(psnr(images, targets[split]).mean()),
                    "ssim": float(ssim(images, targets[split]).mean()),
                    "images": int(images.shape[0])}
            rows.append(row)
            cells = "  ".join(f"{s}: {v['psnr_vs_reference']:6.2f} / {v['psnr']:.3f} / {v['ssim']:.4f}"
                              for s, v in row["splits"].items())
            print(f"{name:16s} {row['bytes']:9,d} B  load {load_s * 1000:6.1f} ms  {cells}", flush=True)
    if args.out:
        result = {"run": str(args.run), "machine": platform.processor() or platform.machine(), "device": str(device),
                  "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  "cpu_threads": torch.get_num_threads(), "reference": REFERENCE,
                  "columns": "per split: PSNR vs reference output / PSNR vs ground truth / SSIM vs ground truth",
                  "rows": rows}
        args.out.write_text(json.dumps(json_safe(result), indent=2) + "\n")


if __name__ == "__main__":
    main()

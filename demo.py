"""The main job on the embedded synthetic subjects.

Today it generates the two synthetic identities the demo configs point at (skipped when already there), loads
them through the three dataset classes the training stages use, and prints where everything is. The training,
compaction and reenactment stages plug in here as they land.

    python demo.py                 # demo scale (CPU-friendly)
    python demo.py --scale full    # full scale (the configs the GPU schedule uses)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lib.config import ReenactConfig, TrainConfig, load_config, meshhead_exp_dim
from lib.dataset import GaussianDataset, MeshDataset, ReenactmentDataset
from lib.errors import exit_on_user_error
from lib.synthetic import generate_subject

ROOT = Path(__file__).resolve().parent
# Subject sizes per scale; resolution and paths come from the configs themselves.
SCALES = {
    "demo": {"frames": 20, "cameras": 8, "suffix": "_synthetic_demo"},
    "full": {"frames": 40, "cameras": 16, "suffix": "_synthetic"},
}
IDENTITIES = (0, 1)  # identity 0 is the avatar, identity 1 drives it


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo", help="subject and schedule size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (used by the generator)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    scale = SCALES[args.scale]
    device = "cpu" if args.device == "auto" else args.device
    config_dir = ROOT / "config"
    overrides = [f"device={args.device}"]
    mesh_cfg = load_config(TrainConfig, config_dir / f"train_meshhead{scale['suffix']}.yaml", overrides, stage="meshhead")
    gauss_cfg = load_config(TrainConfig, config_dir / f"train_gaussianhead{scale['suffix']}.yaml", overrides,
                            stage="gaussianhead")
    reenact_cfg = load_config(ReenactConfig, config_dir / f"reenactment{scale['suffix']}.yaml", overrides,
                              stage="reenactment")

    started = time.perf_counter()
    subject_dirs = [Path(gauss_cfg.dataset.dataroot), Path(reenact_cfg.dataset.dataroot)]
    for identity, subject_dir in zip(IDENTITIES, subject_dirs):
        print(f"[demo] synthetic identity {identity} -> {subject_dir}")
        generate_subject(subject_dir, identity=identity, frames=scale["frames"], cameras=scale["cameras"],
                         resolution=gauss_cfg.dataset.original_resolution, seed=identity, device=device)

    mesh_data = MeshDataset(mesh_cfg.dataset, expected_exp_dim=meshhead_exp_dim(mesh_cfg.meshheadmodule),
                            exp_dim_key="meshheadmodule.exp_deform_mlp[0]")
    gauss_data = GaussianDataset(gauss_cfg.dataset, expected_exp_dim=gauss_cfg.gaussianheadmodule.exp_coeffs_dim,
                                 exp_dim_key="gaussianheadmodule.exp_coeffs_dim")
    driver = ReenactmentDataset(reenact_cfg.dataset, expected_exp_dim=reenact_cfg.gaussianheadmodule.exp_coeffs_dim)
    subject = gauss_data.subject
    mesh_item, gauss_item, driver_item = mesh_data[0], gauss_data[0], driver[0]

    rows = [
        ("subject (avatar)", str(subject_dirs[0])),
        ("subject (driver)", str(subject_dirs[1])),
        ("frames / cameras", f"{len(subject.frames)} / {len(subject.cameras)}"),
        ("held-out cameras", ", ".join(subject.eval_cameras) or "-"),
        ("held-out frames", ", ".join(subject.eval_frames) or "-"),
        ("expression dim", str(subject.exp_dim)),
        ("mesh-stage item", f"images {list(mesh_item['images'].shape)}"),
        ("gaussian-stage item", f"images {list(gauss_item['images'].shape)}, "
                                f"coarse {list(gauss_item['images_coarse'].shape)}"),
        ("reenactment frames", f"{len(driver)} (images {'yes' if 'images' in driver_item else 'no'})"),
        ("preview", str(subject_dirs[0] / "preview.jpg")),
        ("wall time", f"{time.perf_counter() - started:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))


if __name__ == "__main__":
    exit_on_user_error(main)

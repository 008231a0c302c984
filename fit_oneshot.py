"""A person's avatar from one photo (or a few) and a trained prior: track the photo(s), invert the identity code,
fine-tune briefly toward the prior, write a normal avatar run (evaluate.py, reenactment.py, train_gaussianhead.py's
compaction and the viewer take it as they take any avatar).

    python fit_oneshot.py --prior checkpoints/prior_demo --image face.jpg --out checkpoints/oneshot_me
    python fit_oneshot.py --prior checkpoints/prior_demo --images my_photos/ --out checkpoints/fewshot_me
    python fit_oneshot.py --prior checkpoints/prior_demo --subject data/id0 --frames 0000 --cameras cam03
    python evaluate.py --config checkpoints/oneshot_me/config.yaml

--image / --images are tracked first (MediaPipe, the face model; into {out}/subject). --subject takes a subject
folder as it is (synthetic, or tracked by preprocess/track.py) and fits to the views named by --frames/--cameras.
Fitting settings: the prior run's `fit` section, overridable with fit.KEY=VALUE (docs/prior.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cgha.apps.cli import setup_logging
from cgha.errors import ConfigError, exit_on_user_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", required=True, type=Path, help="prior run folder (train_prior.py) or its prior_latest")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="one photo of the person (JPEG/PNG)")
    source.add_argument("--images", type=Path, help="a folder of a few photos of the person (one size)")
    source.add_argument("--subject", type=Path, help="a subject folder (synthetic or tracked) to fit views of")
    parser.add_argument("--frames", nargs="+", help="--subject: frames to fit (default: its first frame)")
    parser.add_argument("--cameras", nargs="+", help="--subject: cameras to fit (default: every rig camera)")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/oneshot"), help="output run folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("overrides", nargs="*", help="fit settings, e.g. fit.finetune_steps=100")
    return parser


def fit_settings(prior_path: Path, overrides):
    """The prior run's config (its fit section), with the overrides; only fit.* keys may be overridden."""
    from cgha.prior.config import load_prior_config
    from cgha.recorder.run_files import RunFiles

    for item in overrides:
        if not item.startswith("fit."):
            raise ConfigError(f"override '{item}': fit_oneshot.py takes fit.* settings only (e.g. "
                              f"fit.finetune_steps=100)")
    config = RunFiles(prior_path if prior_path.is_dir() else prior_path.parent).config
    if config.is_file():
        return load_prior_config(config, overrides)
    return load_prior_config(None, ["model.kind=prior", "model.post_render=none", *overrides])


def main() -> None:
    args = build_parser().parse_args()
    setup_logging()
    from cgha.prior.data import load_views, open_subject
    from cgha.prior.fit import check_compatible, fit_avatar, load_prior, write_fitted_avatar
    from cgha.prior.geometry import load_face_model
    from cgha.prior.photos import list_photos, track_photos
    from cgha.tracking.pipeline import TrackOptions
    from cgha.utils.device import resolve_device

    cfg = fit_settings(args.prior, args.overrides)
    device = resolve_device(args.device)
    prior = load_prior(args.prior, device)
    resolution = cfg.fit.resolution or int(prior.meta["resolution"])
    model_cfg = prior.cfg
    face_model, _ = load_face_model(model_cfg.face_model_samples, model_cfg.face_model_components)
    if args.subject is None:
        photos = [args.image] if args.image is not None else list_photos(args.images)
        options = TrackOptions(resolution=resolution, crop="face", holdout_frames=0.0, holdout_cameras=0,
                               face_model_samples=model_cfg.face_model_samples,
                               face_model_components=model_cfg.face_model_components, device=str(device),
                               force=True)
        subject_root = track_photos(photos, args.out, options)
        frames = cameras = None
    else:
        subject_root, frames, cameras = args.subject, args.frames, args.cameras
    check_compatible(prior, face_model, subject_root)
    subject = open_subject(subject_root, resolution)
    views = load_views(subject_root, resolution, frames or subject.frames[:1], cameras, subject).to(device)
    avatar, report = fit_avatar(prior, face_model, views, cfg.fit, cfg.render.backend)
    written = write_fitted_avatar(avatar, args.out, subject, views, resolution)
    report.update({"prior": str(args.prior), "subject": str(subject_root), "device": str(device),
                   "frames": sorted(set(views.frames)), "cameras": sorted(set(views.cameras)),
                   **{key: str(path) for key, path in written.items()}})
    (args.out / "oneshot_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("views", "seconds", "invert_l1", "finetune_l1", "checkpoint",
                                                   "config")}, indent=2))
    print(f"evaluate: python evaluate.py --config {written['config']}")


if __name__ == "__main__":
    exit_on_user_error(main)

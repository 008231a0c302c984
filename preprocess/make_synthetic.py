"""Write the embedded default subject: a synthetic multi-view head sequence in the GHA dataset layout.

    python preprocess/make_synthetic.py --out data/synthetic_id0 --identity 0 --frames 40 --cameras 16 \\
        --resolution 512 --seed 0

An existing folder with a matching meta.json is reused (nothing is written) unless --force.

With --raw-capture it writes a NeRSemble-style raw capture instead (one mp4 per camera over the background,
calibration/camera_params.json, a BACKGROUND sequence, and ground truth beside it; cgha/synthetic/raw_capture.py),
the input of preprocess/preprocess_nersemble.py; --resolution is then the width of the portrait raw frames:

    python preprocess/make_synthetic.py --raw-capture --out data/raw_synthetic --frames 10 --cameras 8 \\
        --resolution 512

With --monocular it writes the tracking / monocular-avatar preset (cgha.synthetic.generate_monocular_subject): one
training camera cam00 straight ahead, 300 frames by default of a person talking while the head turns over yaw +-40
and pitch +-20 degrees, and one evaluation-only camera oor00 (meta.json splits.out_of_rig_camera_ids):

    python preprocess/make_synthetic.py --monocular --out data/synthetic_mono0 --identity 0 --resolution 512
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


from cgha.apps.cli import int_at_least  # noqa: E402
from cgha.errors import exit_on_user_error  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate a synthetic multi-view head subject (images, masks, cameras, expression/pose "
                    "params, 3D landmarks, tracked vertices, meta.json, preview.jpg) in the GHA layout.")
    parser.add_argument("--out", required=True, type=Path, help="subject folder to write")
    parser.add_argument("--identity", type=int_at_least(0), default=0, help="identity index (default 0)")
    parser.add_argument("--frames", type=int_at_least(1), default=None,
                        help="number of frames (default 40; 300 with --monocular)")
    parser.add_argument("--cameras", type=int_at_least(1), default=None,
                        help="number of cameras (default 16; not with --monocular, which has one)")
    parser.add_argument("--resolution", type=int_at_least(16), default=512,
                        help="image side in pixels (default 512)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="trajectory seed (default 0)")
    parser.add_argument("--lowres", type=int_at_least(8), default=None,
                        help="side of the image_lowres/mask_lowres copies, at most --resolution "
                             "(default 256, or --resolution when smaller)")
    parser.add_argument("--camera-color-spread", type=float, default=0.0,
                        help="per-camera RGB gains exp(U(-s, s)), as a real rig's exposure and white balance "
                             "differ (default 0: none; recorded in meta.json cameras.color_gains)")
    parser.add_argument("--monocular", action="store_true",
                        help="the monocular preset: one training camera, talking, yaw +-40 / pitch +-20 deg head "
                             "turns, one evaluation-only camera (default 300 frames)")
    parser.add_argument("--raw-capture", action="store_true",
                        help="write a NeRSemble-style raw capture (videos, camera_params.json, BACKGROUND) instead")
    parser.add_argument("--subject-id", default="000", help="raw capture: participant folder name (default 000)")
    parser.add_argument("--sequences", nargs="+", default=["EXP-1-head"],
                        help="raw capture: sequence names (default EXP-1-head)")
    parser.add_argument("--device", default="cpu", help="torch device used for rendering (default cpu)")
    parser.add_argument("--force", action="store_true", help="regenerate / replace an existing folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.monocular and args.raw_capture:
        parser.error("--monocular and --raw-capture cannot be combined")
    if args.camera_color_spread and (args.monocular or args.raw_capture):
        parser.error("--camera-color-spread is for the multi-view rig (not --monocular or --raw-capture)")
    if args.monocular and args.cameras is not None:
        parser.error(f"--monocular has one training camera (and one evaluation camera); drop --cameras {args.cameras}")
    from cgha.synthetic import generate_monocular_subject, generate_subject
    from cgha.synthetic.trajectory import MONOCULAR_FRAMES

    start = time.perf_counter()
    existed = args.out.exists() and not args.force
    meta_before = _meta_bytes(args.out)
    if args.frames is None:
        args.frames = MONOCULAR_FRAMES if args.monocular else 40
    if args.cameras is None and not args.monocular:
        args.cameras = 16
    if args.raw_capture:
        _raw_capture(args, existed, start)
        return
    if args.monocular:
        root = generate_monocular_subject(args.out, identity=args.identity, frames=args.frames,
                                          resolution=args.resolution, seed=args.seed, lowres=args.lowres,
                                          progress=not args.quiet, force=args.force, device=args.device)
    else:
        root = generate_subject(args.out, identity=args.identity, frames=args.frames, cameras=args.cameras,
                                resolution=args.resolution, seed=args.seed, lowres=args.lowres,
                                progress=not args.quiet, force=args.force, device=args.device,
                                camera_color_spread=args.camera_color_spread)
    elapsed = time.perf_counter() - start
    # A subject of an older generator version is regenerated in place: only an untouched meta.json means "reused".
    if existed and _meta_bytes(root) == meta_before:
        print(f"{root}: already generated with these arguments (use --force to regenerate)")
    elif args.monocular:
        print(f"{root}: monocular, {args.frames} frames from one camera (+ one evaluation camera) at "
              f"{args.resolution}^2 in {elapsed:.1f} s")
    else:
        print(f"{root}: {args.frames} frames x {args.cameras} cameras (+ out-of-rig evaluation cameras) at "
              f"{args.resolution}^2 in {elapsed:.1f} s")


def _meta_bytes(out: Path) -> bytes | None:
    try:
        return (out / "meta.json").read_bytes()
    except OSError:
        return None


def _raw_capture(args, existed: bool, start: float) -> None:
    from cgha.synthetic import generate_raw_capture

    root = generate_raw_capture(args.out, subject=args.subject_id, identity=args.identity, sequences=args.sequences,
                                frames=args.frames, cameras=args.cameras, width=args.resolution, seed=args.seed,
                                progress=not args.quiet, force=args.force, device=args.device)
    if existed:
        print(f"{root}: already generated with these arguments (use --force to regenerate)")
    else:
        print(f"{root}: raw capture of subject {args.subject_id}, {len(args.sequences)} sequence(s) x {args.frames} "
              f"frames x {args.cameras} cameras, {args.resolution} px wide, in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    exit_on_user_error(main)

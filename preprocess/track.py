"""Turn your own capture into a subject folder: face landmarks, our license-free face model fitted to them, and
images / masks / cameras / params in the dataset layout (docs/tracking.md).

    python preprocess/track.py --video me.mp4 --out data/me                      # one camera (phone, webcam)
    python preprocess/track.py --images DIR --cameras cams.json --out data/rig   # calibrated multi-view frames

Needs the optional extra (MediaPipe, without a second OpenCV):
    pip install -e .[track] && pip install --no-deps mediapipe==0.10.14

Then check and train as for any subject:
    python preprocess/check_dataset.py data/me
    python train_meshhead.py --config config/train_meshhead_synthetic.yaml dataset.dataroot=data/me \\
        dataset.num_sample_view=1        # one camera: one view per sample
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


from cgha.apps.cli import int_at_least  # noqa: E402
from cgha.errors import exit_on_user_error  # noqa: E402


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _holdout(text: str):
    """A number of cameras, or comma-separated camera ids."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected a number of cameras or comma-separated camera ids")
    return ids


def build_parser() -> argparse.ArgumentParser:
    from cgha.tracking.face_model import DEFAULT_NUM_COMPONENTS, DEFAULT_NUM_SAMPLES
    from cgha.tracking.pipeline import (DEFAULT_CROP_SCALE, DEFAULT_FOV_DEG, DEFAULT_MAX_REPROJECTION_PX,
                                        DEFAULT_OBLIQUE_VIEW_DEG, DEFAULT_RESOLUTION, VIEW_CALIBRATION_MODES)

    parser = argparse.ArgumentParser(
        description="Track a face video (one camera) or calibrated multi-view frames with MediaPipe landmarks and "
                    "the license-free cgha face model, and write a subject folder (images, masks, cameras, params, "
                    "lmk_3d.npy, vertices.npy, faces.npy, meta.json, tracking.json, preview.jpg).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, help="one-camera video (mp4, mov, ...)")
    source.add_argument("--images", type=Path, help="folder of frames DIR/<frame>/<camera>.{jpg,png} (needs --cameras)")
    parser.add_argument("--cameras", type=Path, help="camera file of --images (JSON: per camera K, world_to_camera, "
                                                     "image_size; docs/tracking.md)")
    parser.add_argument("--out", type=Path, required=True, help="subject folder to write")
    parser.add_argument("--resolution", type=int_at_least(16), default=DEFAULT_RESOLUTION,
                        help="side of the written square images (intrinsics are written for it)")
    parser.add_argument("--lowres", type=int_at_least(8), default=None,
                        help="side of the image_lowres/mask_lowres copies (default: min(256, --resolution))")
    parser.add_argument("--fov", type=_float, default=DEFAULT_FOV_DEG,
                        help="--video: field of view across the longer side of the video frame, degrees (a 35 mm "
                             "equivalent focal length f gives 2*atan(18/f): 26 mm -> 69)")
    parser.add_argument("--crop", choices=("face", "full"), default=None,
                        help="one square per camera for the whole sequence: around the face's landmarks (default for "
                             "--video) or the centred square of the shorter side (default for --images)")
    parser.add_argument("--crop-scale", type=_float, default=DEFAULT_CROP_SCALE,
                        help="--crop face: square side / larger side of the face landmarks' bounds")
    parser.add_argument("--stride", type=int_at_least(1), default=1, help="use every N-th frame")
    parser.add_argument("--max-frames", type=int_at_least(1), default=None, help="use at most this many frames")
    parser.add_argument("--min-face-fraction", type=_float, default=0.5,
                        help="error when fewer frames than this fraction keep a face")
    parser.add_argument("--max-reprojection", type=_float, default=DEFAULT_MAX_REPROJECTION_PX,
                        help="drop frames whose mean landmark reprojection error exceeds this (px at a 512 side)")
    parser.add_argument("--holdout-frames", type=_float, default=0.1,
                        help="fraction of the frames (the last ones) held out for evaluation")
    parser.add_argument("--holdout-cameras", type=_holdout, default=None,
                        help="held-out cameras: a number or comma-separated ids (default: 1 with 3+ cameras, else 0)")
    parser.add_argument("--masks", choices=("auto", "segmentation", "plates"), default="auto",
                        help="person masks from MediaPipe selfie segmentation, or background subtraction against "
                             "--backgrounds (auto: plates when --backgrounds is given)")
    parser.add_argument("--mask-region", choices=("head", "person"), default="head",
                        help="head: the person mask cut below the fitted neck (what a head avatar models; default); "
                             "person: the whole mask, shoulders and torso included")
    parser.add_argument("--mask-edges", choices=("guided", "none"), default="guided",
                        help="guided: segmentation masks' edges snapped to the frame's colour edges (a guided filter; "
                             "the segmentation sees 256^2); none: its own edges (default guided)")
    parser.add_argument("--backgrounds", type=Path, default=None,
                        help="folder of empty-scene plates <camera>.{jpg,png} at the cameras' raw size")
    parser.add_argument("--min-detection-confidence", type=_float, default=0.5, help="face detector threshold")
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument("--calibration", type=Path, default=None,
                             help="landmark calibration file (MediaPipe's points vs the face model's landmarks; "
                                  "default: the one shipped in cgha/tracking/data)")
    calibration.add_argument("--no-calibration", action="store_true",
                             help="fit the face model's own landmark definitions to MediaPipe's points (biased: "
                                  "docs/tracking.md)")
    parser.add_argument("--face-model-samples", type=int_at_least(2), default=DEFAULT_NUM_SAMPLES,
                        help="identity PCA samples of the face model (a smaller model builds faster, fits less well)")
    parser.add_argument("--face-model-components", type=int_at_least(1), default=DEFAULT_NUM_COMPONENTS,
                        help="identity components of the face model (fewer than --face-model-samples)")
    parser.add_argument("--oblique-view-deg", type=_float, default=DEFAULT_OBLIQUE_VIEW_DEG,
                        help="multi-view: a view's landmarks weigh a quarter at this angle from frontal (MediaPipe "
                             "errs more on oblique views; docs/tracking.md); 0: all views alike")
    parser.add_argument("--view-calibration", choices=VIEW_CALIBRATION_MODES, default=VIEW_CALIBRATION_MODES[0],
                        help="correct the detections with the calibration's view-dependent offsets: with one camera "
                             "(monocular, the default), always, or off (docs/tracking.md)")
    parser.add_argument("--photometric", action="store_true",
                        help="refine the landmark fit's poses against the images (analysis by synthesis of the face "
                             "region; docs/tracking.md): more accurate heads, minutes on a CPU")
    parser.add_argument("--fit", nargs="+", default=[], metavar="KEY=VALUE",
                        help="FitConfig overrides, e.g. smooth_rotation=0 smooth_translation=0 smooth_expression=0 "
                             "for frames that are not in time order")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (the fit; landmarks run on the CPU)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images is not None and args.cameras is None:
        parser.error("--images needs --cameras (the rig's calibration); for one camera use --video")
    if args.video is not None and args.cameras is not None:
        parser.error("--cameras belongs to --images; a --video is one camera with intrinsics from --fov")
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    from cgha.tracking.pipeline import TrackOptions, parse_fit_overrides, track_images, track_video

    options = TrackOptions(
        resolution=args.resolution, lowres=args.lowres, fov_deg=args.fov, crop=args.crop, crop_scale=args.crop_scale,
        stride=args.stride, max_frames=args.max_frames, min_face_fraction=args.min_face_fraction,
        max_reprojection_px=args.max_reprojection, holdout_frames=args.holdout_frames,
        holdout_cameras=args.holdout_cameras, masks=args.masks, mask_region=args.mask_region,
        mask_edges=args.mask_edges,
        backgrounds=args.backgrounds, min_detection_confidence=args.min_detection_confidence,
        fit=parse_fit_overrides(args.fit), oblique_view_deg=args.oblique_view_deg,
        view_calibration=args.view_calibration, photometric=args.photometric,
        calibration=None if args.no_calibration else (args.calibration or "default"),
        face_model_samples=args.face_model_samples, face_model_components=args.face_model_components,
        device=args.device, force=args.force, progress=not args.quiet)
    if args.video is not None:
        result = track_video(args.video, args.out, options)
    else:
        result = track_images(args.images, args.cameras, args.out, options)
    report = result.report
    reproj, fps, timings = report["reprojection_px"], report["fps"], report["timings_s"]
    print(f"{result.out_dir}: {len(result.frames)} frames x {len(result.cameras)} camera(s) at "
          f"{reproj['resolution']}^2, {len(result.dropped)} dropped; landmark reprojection median {reproj['median']} px "
          f"(p95 {reproj['p95']}); landmarks {fps['landmarks_images']} images/s, fit {fps['fit_frames']} frames/s "
          f"on {report['device']}"
          + (f"; photometric refinement {timings['photometric']} s (head rotation changed by "
             f"{report['photometric']['rotation_change_deg']['median']} deg, median)" if report["photometric"] else "")
          + f"; {timings['total']} s in all. Report: {result.out_dir / 'tracking.json'}, "
          f"preview: {result.out_dir / 'preview.jpg'}", file=sys.stdout)


if __name__ == "__main__":
    exit_on_user_error(main)

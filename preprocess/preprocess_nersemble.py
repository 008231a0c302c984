"""Raw NeRSemble captures -> the subject layout the training stages read (docs/preprocessing.md).

    python preprocess/preprocess_nersemble.py --raw-root /data/nersemble_raw --subject 031 --out data/nersemble \\
        --sequences EXP-1-head EMO-1-shout+laugh --size 2048 --crop-size 2600 --stride 3

writes data/nersemble/031/{images,cameras,background}/ and preprocess.json. Rerunning resumes (finished views are
skipped); then run remove_background.py, the 3DMM tracker and check_dataset.py.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


from cgha.errors import exit_on_user_error  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Extract frames, cameras and background plates from a raw NeRSemble download into the "
                    "GHA subject layout (square crop + resize, intrinsics updated), resumable and parallel over "
                    "cameras.")
    parser.add_argument("--raw-root", required=True, type=Path,
                        help="folder of the raw download (holds {subject}/sequences/ or sequence_*_part-*/)")
    parser.add_argument("--subject", required=True, nargs="+", help="participant id(s), e.g. 031")
    parser.add_argument("--out", required=True, type=Path, help="output root; each subject goes to OUT/{subject}")
    parser.add_argument("--sequences", nargs="+", default=None,
                        help="sequences in output order (default: all but BACKGROUND, sorted by name)")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="camera serials (default: every calibrated camera with videos in every sequence)")
    parser.add_argument("--size", type=int, default=2048, help="output side in pixels (default 2048, GHA)")
    parser.add_argument("--lowres", type=int, default=None,
                        help="side of the *_lowres copies (default 256, or --size when smaller; never above --size)")
    parser.add_argument("--crop-size", type=int, default=None,
                        help="side of the centred square crop in raw pixels (default: the shorter side; GHA: 2600)")
    parser.add_argument("--crop-offset", type=int, nargs=2, default=(0, 0), metavar=("DX", "DY"),
                        help="shift of the crop in raw pixels (default 0 0)")
    parser.add_argument("--stride", type=int, default=1, help="keep every STRIDE-th frame (GHA: 3)")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many frames per sequence")
    parser.add_argument("--camera-params", type=Path, default=None,
                        help="camera_params.json to use instead of the one in the raw layout")
    parser.add_argument("--no-background", action="store_true",
                        help="do not write background plates (remove_background.py needs them)")
    parser.add_argument("--workers", type=int, default=0,
                        help="cameras processed in parallel (default: one per camera, at most the CPU count)")
    parser.add_argument("--force", action="store_true", help="redo every view, even with other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from cgha.preprocess.extract import PreprocessOptions, preprocess_subject

    options = PreprocessOptions(
        sequences=args.sequences, cameras=args.cameras, size=args.size, lowres=args.lowres, crop_size=args.crop_size,
        crop_offset=tuple(args.crop_offset), stride=args.stride, max_frames=args.max_frames,
        background=not args.no_background, calibration=args.camera_params, workers=args.workers, force=args.force,
        progress=not args.quiet)
    for subject in args.subject:
        start = time.perf_counter()
        result = preprocess_subject(args.raw_root, subject, args.out, options)
        print(f"{result.out_dir}: {len(result.frames)} frames x {len(result.cameras)} cameras at {args.size}^2 "
              f"({result.written} views written, {result.skipped} already done, {result.plates} background plates) "
              f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    exit_on_user_error(main)

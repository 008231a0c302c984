"""Foreground masks for a preprocessed subject: mask_{cam}.jpg and mask_lowres_{cam}.jpg (docs/preprocessing.md).

    python preprocess/remove_background.py --subject-dir data/nersemble/031
    python preprocess/remove_background.py --subject-dir data/nersemble/031 --matting-model my_bgmv2.py:matte

Default: background subtraction against the camera's plate background/image_{cam}.jpg. --matting-model names a
callable (image, background) -> alpha that wraps a learned matting model you provide. Rerunning resumes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


from cgha.errors import exit_on_user_error  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write foreground masks for every view of a subject folder, by background subtraction against "
                    "the background plates or with a learned matting model you provide.")
    parser.add_argument("--subject-dir", required=True, type=Path, nargs="+",
                        help="subject folder(s) written by preprocess_nersemble.py")
    parser.add_argument("--cameras", nargs="+", default=None, help="cameras to mask (default: all)")
    parser.add_argument("--lowres", type=int, default=None,
                        help="side of mask_lowres (default: the size of image_lowres, else 256)")
    parser.add_argument("--matting-model", default=None, metavar="MODULE:FUNCTION",
                        help="callable (image, background) -> alpha, as package.module:function or file.py:function")
    parser.add_argument("--workers", type=int, default=0,
                        help="views processed in parallel (default: CPU count; 1 with --matting-model)")
    parser.add_argument("--force", action="store_true", help="recompute existing masks")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from cgha.preprocess.background_removal import MaskingOptions, remove_background
    from cgha.preprocess.matting import load_matting_model

    matting = load_matting_model(args.matting_model) if args.matting_model else None
    options = MaskingOptions(cameras=args.cameras, lowres=args.lowres, matting=matting, workers=args.workers,
                             force=args.force, progress=not args.quiet)
    method = f"matting model {args.matting_model}" if matting else "background subtraction"
    for subject_dir in args.subject_dir:
        start = time.perf_counter()
        result = remove_background(subject_dir, options)
        print(f"{subject_dir}: {result.written} masks written, {result.skipped} already done ({method}) "
              f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    exit_on_user_error(main)

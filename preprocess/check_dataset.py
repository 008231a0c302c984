"""Report everything missing or inconsistent in a subject folder before training (docs/preprocessing.md).

    python preprocess/check_dataset.py data/nersemble/031 --exp-dim 64

Exit status 0 when the folder is complete and consistent; otherwise every problem is listed (grouped by file
pattern) and the status is 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path


from cgha.errors import DataError, exit_on_user_error  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Check a subject folder (images, masks, low-res copies, cameras, tracker params, landmarks, "
                    "vertices) and list every problem.")
    parser.add_argument("subject_dir", type=Path, help="subject folder")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="cameras that must be present (default: every camera found)")
    parser.add_argument("--exp-dim", type=int, default=None,
                        help="expected expression dimension (gaussianheadmodule.exp_coeffs_dim; BFM: 64)")
    parser.add_argument("--no-lowres", action="store_true", help="do not require the *_lowres copies")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from cgha.preprocess.check import check_subject

    report = check_subject(args.subject_dir, cameras=args.cameras, exp_dim=args.exp_dim, lowres=not args.no_lowres)
    if not report.ok:
        lines = report.lines()
        print("\n".join(lines))
        raise DataError(f"{args.subject_dir}: {len(report.problems)} problem(s) of {len(lines)} kind(s), listed above")
    summary = report.summary
    size = summary["image_size"]
    print(f"ok: {args.subject_dir}: {summary['frames']} frames x {summary['cameras']} cameras, images "
          f"{size[0]}x{size[1]}, exp_coeff dim {summary['exp_dim']}, {summary['landmarks']} landmarks, "
          f"{summary['vertices']} tracked vertices")


if __name__ == "__main__":
    exit_on_user_error(main)

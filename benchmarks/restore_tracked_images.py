"""Rebuild a tracked rig subject's images from the rig's own images, for moving a tracked subject between machines.

A subject tracked by ``track.py --crop full`` at the rig's resolution holds its images as the rig's JPEGs decoded and
written again, and low-res copies of them: everything but the masks, parameters and cameras can be rebuilt from the
rig. ``bench_retracked.py --track-only`` on one machine, then this script and ``--reuse-tracking`` on another, moves
only what the tracker computed (a third of the bytes at 512²), e.g. to a GPU host that takes a limited upload.

    python benchmarks/restore_tracked_images.py --rig data/synthetic/id0 --tracked WORK/retracked

Every view that has a tracked mask gets its image from the rig's ``image_<camera>.jpg``; a missing rig image or a
rig image of another size than the tracked mask stops it with the file named (the subject would not be the tracked
one: another crop or resolution).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from cgha.dataset.layout import SubjectLayout
from cgha.preprocess.crop import resize_square
from cgha.preprocess.files import jpeg_size, write_jpeg
from cgha.utils.image_io import read_rgb


def restore_images(rig: Path, tracked: Path) -> int:
    """Write ``image_<cam>.jpg`` and ``image_lowres_<cam>.jpg`` beside each of the tracked subject's masks.

    Args:
        rig: the subject whose images were tracked (``images/<frame>/image_<cam>.jpg``).
        tracked: the tracked subject (``images/<frame>/mask_<cam>.jpg``, ``meta.json`` with ``lowres_resolution``).
    Returns:
        the number of views written.
    """
    rig_layout, tracked_layout = SubjectLayout(rig), SubjectLayout(tracked)
    meta = tracked_layout.meta() or {}
    if "lowres_resolution" not in meta:
        raise SystemExit(f"{tracked_layout.meta_path}: no 'lowres_resolution' (not a subject written by track.py)")
    lowres = int(meta["lowres_resolution"])
    views = sorted((path.parent.name, path.stem[len("mask_"):]) for path in (tracked / "images").glob("*/mask_*.jpg")
                   if not path.name.startswith("mask_lowres_"))
    if not views:
        raise SystemExit(f"{tracked / 'images'}: no masks to restore images for")
    # Every view is checked before any file is written: a wrong rig leaves the tracked subject as it was.
    for frame, camera in views:
        source, mask = rig_layout.image(frame, camera), tracked_layout.mask(frame, camera)
        if not source.is_file():
            raise SystemExit(f"{source}: missing; {mask} was tracked from it")
        source_size, mask_size = jpeg_size(source), jpeg_size(mask)
        if source_size != mask_size:
            raise SystemExit(f"{source}: {'x'.join(map(str, source_size or (0, 0)))}, but the tracked mask {mask} "
                             f"is {'x'.join(map(str, mask_size or (0, 0)))}")
    for frame, camera in tqdm(views, desc="restore", unit="view"):
        image = read_rgb(rig_layout.image(frame, camera))
        write_jpeg(tracked_layout.image(frame, camera), image)
        write_jpeg(tracked_layout.image(frame, camera, lowres=True), resize_square(image, lowres))
    return len(views)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rig", type=Path, required=True, help="the subject whose images were tracked")
    parser.add_argument("--tracked", type=Path, required=True, help="the tracked subject (WORK/retracked)")
    args = parser.parse_args()
    print(f"restored {restore_images(args.rig, args.tracked)} views into {args.tracked}")


if __name__ == "__main__":
    sys.exit(main())

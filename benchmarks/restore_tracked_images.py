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
import json
import sys
from pathlib import Path

from tqdm import tqdm

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
    meta = json.loads((tracked / "meta.json").read_text())
    if "lowres_resolution" not in meta:
        raise SystemExit(f"{tracked / 'meta.json'}: no 'lowres_resolution' (not a subject written by track.py)")
    lowres = int(meta["lowres_resolution"])
    masks = sorted(p for p in (tracked / "images").glob("*/mask_*.jpg") if not p.name.startswith("mask_lowres_"))
    if not masks:
        raise SystemExit(f"{tracked / 'images'}: no masks to restore images for")
    # Every view is checked before any file is written: a wrong rig leaves the tracked subject as it was.
    sources = []
    for mask_path in masks:
        camera = mask_path.stem[len("mask_"):]
        source = rig / "images" / mask_path.parent.name / f"image_{camera}.jpg"
        if not source.is_file():
            raise SystemExit(f"{source}: missing; {mask_path} was tracked from it")
        if jpeg_size(source) != jpeg_size(mask_path):
            width, height = jpeg_size(source) or (0, 0)
            mask_width, mask_height = jpeg_size(mask_path) or (0, 0)
            raise SystemExit(f"{source}: {width}x{height}, but the tracked mask {mask_path} is "
                             f"{mask_width}x{mask_height}")
        sources.append((source, mask_path.parent, camera))
    for source, frame_dir, camera in tqdm(sources, desc="restore", unit="view"):
        image = read_rgb(source)
        write_jpeg(frame_dir / f"image_{camera}.jpg", image)
        write_jpeg(frame_dir / f"image_lowres_{camera}.jpg", resize_square(image, lowres))
    return len(masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rig", type=Path, required=True, help="the subject whose images were tracked")
    parser.add_argument("--tracked", type=Path, required=True, help="the tracked subject (WORK/retracked)")
    args = parser.parse_args()
    print(f"restored {restore_images(args.rig, args.tracked)} views into {args.tracked}")


if __name__ == "__main__":
    sys.exit(main())

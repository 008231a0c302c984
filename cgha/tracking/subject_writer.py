"""Files of a tracked subject, in the layout the synthetic writer (``cgha.synthetic.writer``) and the datasets use.

Per frame ``{frame}`` and camera ``{cam}``::

    images/{frame}/image_{cam}.jpg, mask_{cam}.jpg            RGB and mask at the output resolution
    images/{frame}/image_lowres_{cam}.jpg, mask_lowres_{cam}.jpg   the mesh stage's low-res copies
    cameras/{frame}/camera_{cam}.npz      intrinsic [3, 3] (pixels at the output resolution), extrinsic [3, 4]
    params/{frame}/params.npz             pose [1, 6], scale [1], exp_coeff [1, 16]
    params/{frame}/lmk_3d.npy             [68, 3] iBUG-68, world
    params/{frame}/vertices.npy           [V, 3] the fitted face-model mesh, world

and once per subject ``faces.npy`` (the face model's triangles), ``preview.jpg``, ``tracking.json`` and
``meta.json`` (written last by the caller). The writers here go into the hidden folder that
``cgha.utils.atomic.write_directory_atomic`` renames into place at the end, so a failed run leaves nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cgha.preprocess.crop import resize_square
from cgha.preprocess.files import JPEG_QUALITY, write_jpeg, write_npz

__all__ = ["write_view", "write_frame_params", "write_json", "preview_sheet", "draw_landmarks",
           "PREVIEW_TILE", "spread"]

PREVIEW_TILE = 256  # side of one preview tile in pixels
_DETECTED = (40, 220, 40)  # RGB: landmarks the landmarker found
_FITTED = (235, 40, 40)  # RGB: the fitted model's landmarks projected into the view


def write_view(root: Path, frame: str, camera: str, image: np.ndarray, mask: np.ndarray, lowres: int,
               intrinsic: np.ndarray, extrinsic: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """One view's images, masks, low-res copies and camera file.

    Args:
        image: RGB uint8 [R, R, 3]; mask: uint8 [R, R] (255 = foreground).
        lowres: side of the ``*_lowres_*`` copies.
        intrinsic: [3, 3] pixels of the R x R image; extrinsic: [3, 4] world-to-camera (OpenCV axes).
    """
    img_dir = root / "images" / frame
    cam_dir = root / "cameras" / frame
    img_dir.mkdir(parents=True, exist_ok=True)
    cam_dir.mkdir(parents=True, exist_ok=True)
    write_jpeg(img_dir / f"image_{camera}.jpg", image, quality)
    write_jpeg(img_dir / f"mask_{camera}.jpg", mask, quality)
    write_jpeg(img_dir / f"image_lowres_{camera}.jpg", resize_square(image, lowres), quality)
    write_jpeg(img_dir / f"mask_lowres_{camera}.jpg", resize_square(mask, lowres), quality)
    write_npz(cam_dir / f"camera_{camera}.npz", intrinsic=np.asarray(intrinsic, dtype=np.float32),
              extrinsic=np.asarray(extrinsic, dtype=np.float32))


def write_frame_params(root: Path, frame: str, pose: np.ndarray, scale: float, exp: np.ndarray,
                       landmarks: np.ndarray, vertices: np.ndarray) -> None:
    """``params/{frame}/``: params.npz (pose [1, 6], scale [1], exp_coeff [1, D]), lmk_3d.npy [68, 3] and
    vertices.npy [V, 3], all float32 and in world coordinates."""
    par_dir = root / "params" / frame
    par_dir.mkdir(parents=True, exist_ok=True)
    write_npz(par_dir / "params.npz", pose=np.asarray(pose, dtype=np.float32).reshape(1, 6),
              scale=np.asarray([scale], dtype=np.float32),
              exp_coeff=np.asarray(exp, dtype=np.float32).reshape(1, -1))
    np.save(par_dir / "lmk_3d.npy", np.asarray(landmarks, dtype=np.float32))
    np.save(par_dir / "vertices.npy", np.asarray(vertices, dtype=np.float32))


def write_json(path: Path, data: Dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def draw_landmarks(image: np.ndarray, detected: Optional[np.ndarray], fitted: Optional[np.ndarray],
                   label: str, tile: int = PREVIEW_TILE) -> np.ndarray:
    """A preview tile: ``image`` (RGB uint8 [R, R, 3]) resized to ``tile``, the detected landmarks (green) and the
    fitted ones (red) drawn over it, and a label strip at the bottom.

    Args:
        detected, fitted: [68, 2] pixels of the R x R image (pixel centres at +0.5), or None.
    """
    R = image.shape[0]
    out = np.ascontiguousarray(resize_square(image, tile)).copy()
    f = tile / R
    radius = max(1, tile // 128)
    # Detected points a size larger than the fitted ones drawn over them: both stay visible where they agree.
    for points, colour, r in ((detected, _DETECTED, radius + 1), (fitted, _FITTED, radius)):
        if points is None:
            continue
        for x, y in np.asarray(points, dtype=np.float64) * f:
            if np.isfinite(x) and np.isfinite(y):
                # cv2 draws at integer pixel centres: continuous (x, y) lies in pixel floor(x, y).
                cv2.circle(out, (int(np.floor(x)), int(np.floor(y))), r, colour, -1, cv2.LINE_AA)
    out[-13:] = out[-13:] // 3  # a dark strip keeps the label readable on any background
    cv2.putText(out, label, (3, tile - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def preview_sheet(tiles: Dict[Tuple[int, int], np.ndarray], frames: Sequence[int], cameras: Sequence[int],
                  tile: int = PREVIEW_TILE) -> np.ndarray:
    """Grid of tiles keyed (frame, camera): one row per frame and one column per camera, or with a single camera
    one row of frames; white where a tile is missing."""
    grid = [[(f, c) for c in cameras] for f in frames]
    if len(cameras) == 1:
        grid = [[(f, cameras[0]) for f in frames]]
    sheet = np.full((len(grid) * tile, len(grid[0]) * tile, 3), 255, dtype=np.uint8)
    for r, row in enumerate(grid):
        for c, key in enumerate(row):
            if key in tiles:
                sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = tiles[key]
    return sheet


def spread(num: int, want: int) -> List[int]:
    """``want`` indices spread evenly over ``range(num)`` (all of them when there are few)."""
    if num <= want:
        return list(range(num))
    return sorted({int(round(i * (num - 1) / (want - 1))) for i in range(want)})

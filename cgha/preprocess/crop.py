"""Square crop + resize of raw frames, and the matching intrinsics update.

The crop rule: a square of side ``side`` (default: the shorter image side) centred on the image centre, shifted by
``offset`` raw pixels; parts outside the raw frame are padded with black (and are marked in the visibility mask).
GHA's preprocess_nersemble.py is the special case ``side=2600`` on 2200 x 3208 frames (its corner (-200, 304) is the
centred square), followed by a resize to 2048^2.

Intrinsics follow docs/conventions.md: pixel (u, v) covers [u, u+1) x [v, v+1). A crop whose top-left raw pixel is
(x0, y0) moves the principal point by (-x0, -y0); resizing a side-``s`` square to ``n`` pixels scales the first two
rows of K by n / s, with no half-pixel term (that term only appears with pixel centres at integers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["SquareCrop", "centred_square_crop", "crop_image", "resize_square", "crop_resize", "crop_resize_intrinsics",
           "visible_mask"]


@dataclass(frozen=True)
class SquareCrop:
    """A square window of the raw frame: top-left raw pixel (x0, y0) (may be negative) and side length, in pixels."""

    x0: int
    y0: int
    side: int

    def inside(self, width: int, height: int) -> bool:
        """True when the window lies entirely inside a width x height frame (no padding needed)."""
        return self.x0 >= 0 and self.y0 >= 0 and self.x0 + self.side <= width and self.y0 + self.side <= height


def centred_square_crop(width: int, height: int, side: Optional[int] = None,
                        offset: Tuple[int, int] = (0, 0)) -> SquareCrop:
    """The centred square of ``side`` pixels (default ``min(width, height)``), shifted by ``offset`` = (dx, dy)."""
    side = min(width, height) if side is None else int(side)
    if side < 1:
        raise ValueError(f"crop side must be >= 1, got {side}")
    # Integer corner (crops never resample); an odd margin leaves the extra pixel on the left/top.
    x0 = int(np.floor((width - side) / 2.0 + 0.5)) + int(offset[0])
    y0 = int(np.floor((height - side) / 2.0 + 0.5)) + int(offset[1])
    return SquareCrop(x0, y0, side)


def crop_image(image: np.ndarray, crop: SquareCrop) -> np.ndarray:
    """[H, W, ...] -> [side, side, ...]; pixels outside the frame are 0."""
    height, width = image.shape[:2]
    if crop.inside(width, height):
        return image[crop.y0:crop.y0 + crop.side, crop.x0:crop.x0 + crop.side]
    out = np.zeros((crop.side, crop.side) + image.shape[2:], dtype=image.dtype)
    x_from, y_from = max(crop.x0, 0), max(crop.y0, 0)
    x_to, y_to = min(crop.x0 + crop.side, width), min(crop.y0 + crop.side, height)
    if x_to > x_from and y_to > y_from:
        out[y_from - crop.y0:y_to - crop.y0, x_from - crop.x0:x_to - crop.x0] = image[y_from:y_to, x_from:x_to]
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to size x size: area averaging when shrinking (no aliasing), bilinear when growing."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interpolation = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def crop_resize(image: np.ndarray, crop: SquareCrop, size: int) -> np.ndarray:
    """Crop then resize: [H, W, ...] -> [size, size, ...]."""
    return resize_square(crop_image(image, crop), size)


def crop_resize_intrinsics(K: np.ndarray, crop: SquareCrop, size: int) -> np.ndarray:
    """Intrinsics of the cropped and resized image.

    Args:
        K: [3, 3] in raw pixels.
    Returns:
        [3, 3] float64 in pixels of the size x size output.
    """
    out = np.array(K, dtype=np.float64)
    out[0, 2] -= crop.x0
    out[1, 2] -= crop.y0
    out[:2] *= size / crop.side
    return out


def visible_mask(width: int, height: int, crop: SquareCrop, size: int) -> np.ndarray:
    """uint8 [size, size]: 255 where the output shows raw pixels, 0 on the black padding (GHA's visible_*.jpg)."""
    return crop_resize(np.full((height, width), 255, dtype=np.uint8), crop, size)

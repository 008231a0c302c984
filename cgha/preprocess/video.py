"""Reading frames from per-camera videos (and background stills) with errors that name the file."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Tuple

import cv2
import numpy as np

from cgha.errors import DataError

from .raw_layout import IMAGE_SUFFIXES

__all__ = ["VideoReader", "read_background_plate"]


class VideoReader:
    """Sequential RGB frames of one video file.

    Attributes:
        path: the file; frame_count: frames announced by the container; width, height: frame size in pixels;
        fps: frame rate announced by the container (0 when unknown).
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"video not found: {self.path}")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise DataError(f"{self.path}: cannot open the video (corrupt, truncated or not a video)")
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)  # 0 when the container does not say
        if self.frame_count <= 0 or self.width <= 0 or self.height <= 0:
            self.close()
            raise DataError(f"{self.path}: the video has no readable frames (corrupt or empty)")

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._capture.release()

    def frames(self, indices: Iterable[int]) -> Iterator[Tuple[int, np.ndarray]]:
        """(index, RGB uint8 [H, W, 3]) for each wanted frame index, in increasing order.

        Frames are decoded in order (seeking in long-GOP video is slow and not frame-exact); frames that are not
        wanted are only grabbed, not converted.
        """
        wanted = sorted(set(int(i) for i in indices))
        position = 0
        for index in wanted:
            while position < index:
                if not self._capture.grab():
                    self._ended(position, index)
                position += 1
            ok, frame = self._capture.read()
            if not ok or frame is None:
                self._ended(position, index)
            position += 1
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _ended(self, position: int, wanted: int) -> None:
        raise DataError(f"{self.path}: the video ended after {position} frames, but frame {wanted} was expected "
                        f"(the file announces {self.frame_count}; truncated or corrupt?)")


def read_background_plate(path, transform: Callable[[np.ndarray], np.ndarray], max_frames: int = 9) -> np.ndarray:
    """The background plate of one camera: a still, or the per-pixel median of up to ``max_frames`` frames spread
    over a BACKGROUND video (the median removes sensor noise and anything passing through).

    Args:
        path: a video or an image file.
        transform: applied to each RGB uint8 frame before the median (crop + resize: the median then runs at the
            output size, which keeps memory small for 2200 x 3208 frames).
    Returns:
        RGB uint8 [h, w, 3].
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{path}: cannot decode the background image (corrupt or not an image)")
        return transform(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    with VideoReader(path) as reader:
        count = min(max_frames, reader.frame_count)
        indices = np.unique(np.linspace(0, reader.frame_count - 1, count).round().astype(int))
        stack: Optional[np.ndarray] = None
        for i, (_, frame) in enumerate(reader.frames(indices)):
            frame = transform(frame)
            if stack is None:
                stack = np.empty((len(indices),) + frame.shape, dtype=np.uint8)
            stack[i] = frame
    plate = np.empty_like(stack[0])
    for row in range(0, plate.shape[0], 128):  # row blocks bound the float64 temporaries of np.median
        plate[row:row + 128] = np.median(stack[:, row:row + 128], axis=0).round().astype(np.uint8)
    return plate

"""Foreground (person) masks from MediaPipe's selfie segmentation, bundled in the ``mediapipe`` wheel.

Installed with the landmarker (``cgha/tracking/landmarker.py`` gives the recipe); nothing is downloaded at run time.

The model (``mediapipe.solutions.selfie_segmentation``) sees the image resized to 256^2 ("general", the default:
our frames and face crops are square) or 144x256 ("landscape", ``model_selection=1``) and returns a per-pixel
person probability at the input size. It segments a *person*: below the chin it expects shoulders and fills them in
even where there are none. Measured on renders of three synthetic identities in 7 poses each (frontal, yaw +-20 and
+-40, pitch +-20 degrees) at 256^2 and 512^2, against the exact render masks (IoU of the masks thresholded at 0.5):
over the image rows down to the bottom of the true mask, median 0.98 (min 0.91, head tilted back); over the whole
image, median 0.73-0.81 (min 0.62: the model adds a torso under the synthetic head's neck stub, most in frontal
views). Model 1 was worse on these square frames (whole-image IoU 0.60-0.98 vs 0.68-0.98 on the yaw views). On real
footage, where there are shoulders, the whole mask is meant. Speed: ~4 ms per 256^2 or 512^2 image on one CPU core.
"""
from __future__ import annotations

import warnings

import numpy as np

from .landmarker import _as_rgb_uint8, _iter_images, import_mediapipe

__all__ = ["PersonSegmenter", "segment"]


class PersonSegmenter:
    """MediaPipe's selfie segmentation; ``segment`` handles one image. A context manager (the MediaPipe graph holds
    native resources until ``close``).

    Args:
        model_selection: 0 = general model (256x256 input; best on square frames), 1 = landscape (144x256).
    Raises:
        ImportError: mediapipe is missing or broken (the message names the install command).
    """

    def __init__(self, model_selection: int = 0):
        if model_selection not in (0, 1):
            raise ValueError(f"model_selection must be 0 (general) or 1 (landscape), got {model_selection!r}")
        mp = import_mediapipe()
        self._graph = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def close(self) -> None:
        self._graph.close()

    def __enter__(self) -> "PersonSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def segment(self, image: np.ndarray) -> np.ndarray:
        """One [H, W, 3] uint8 RGB image -> [H, W] float32 person probability in [0, 1]."""
        a = _as_rgb_uint8(image)
        with warnings.catch_warnings():
            # protobuf 4 flags an API MediaPipe 0.10.14 calls on every frame; nothing for the caller to act on.
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            mask = self._graph.process(a).segmentation_mask
        if mask is None or mask.shape != a.shape[:2]:
            raise RuntimeError(f"mediapipe selfie segmentation returned a mask of shape "
                               f"{None if mask is None else mask.shape} for an image of {a.shape[1]}x{a.shape[0]}")
        return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)


def segment(images, model_selection: int = 0) -> np.ndarray:
    """Person masks of N images of one size.

    Args:
        images: [N, H, W, 3] uint8 RGB, or an iterable of [H, W, 3] uint8 RGB images, all of one size.
        model_selection: 0 = general (default), 1 = landscape (see ``PersonSegmenter``).
    Returns:
        [N, H, W] float32 in [0, 1] (soft masks: threshold at 0.5 for a hard one).
    Raises:
        ImportError: mediapipe is missing (the message names the install command).
        ValueError: an image that is not [H, W, 3] uint8, or images of different sizes.
    """
    images = _iter_images(images)
    masks: list[np.ndarray] = []
    with PersonSegmenter(model_selection) as segmenter:
        for i, image in enumerate(images):
            a = _as_rgb_uint8(image, i)
            if masks and a.shape[:2] != masks[0].shape:
                raise ValueError(f"image {i}: {a.shape[1]}x{a.shape[0]} differs from image 0's "
                                 f"{masks[0].shape[1]}x{masks[0].shape[0]}; segment images of one size per call "
                                 f"(or use PersonSegmenter.segment per image)")
            masks.append(segmenter.segment(a))
    if not masks:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.stack(masks)

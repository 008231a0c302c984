"""Background subtraction on constructed images, and the learned-matting hook."""
import math
import sys

import cv2
import numpy as np
import pytest

from cgha.preprocess.background_removal import MaskingOptions, remove_background
from cgha.preprocess.files import background_plate_path, write_jpeg
from cgha.preprocess.masks import _chi3_quantile, lab_distance, mask_iou, noise_scale, subtract_background
from cgha.preprocess.matting import MattingModelError, apply_matting, load_matting_model

SIZE = 160


def _scene(seed: int = 0, noise: float = 2.0):
    """A smooth, cool-toned textured plate (a studio wall), and the same view with an anti-aliased skin-coloured ellipse, a camouflaged patch
    inside it and a few noise speckles outside; returns (image, plate, exact foreground)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform([60, 80, 110], [120, 140, 180], (5, 5, 3)).astype(np.float32)
    plate = cv2.resize(low, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    inside = ((xx - 80) / 45) ** 2 + ((yy - 85) / 60) ** 2
    truth = inside <= 1.0
    # 4x supersampled coverage gives the soft edge a real camera would record.
    fine = np.mgrid[0:4 * SIZE, 0:4 * SIZE] / 4.0 + 0.125
    coverage = cv2.resize(((((fine[1] - 80) / 45) ** 2 + ((fine[0] - 85) / 60) ** 2) <= 1.0).astype(np.float32),
                          (SIZE, SIZE), interpolation=cv2.INTER_AREA)[..., None]
    skin = np.array([205, 150, 120], np.float32) * (0.8 + 0.2 * np.cos(xx / 9.0))[..., None]
    image = coverage * skin + (1 - coverage) * plate
    image[80:84, 78:82] = plate[80:84, 78:82]  # a small patch that looks exactly like the background
    add = lambda a: np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)  # noqa: E731
    image, plate = add(image), add(plate)
    image[10:12, 10:12] = 255  # speckle: a separate tiny component
    return image, plate, truth


def test_maxwell_quantile_and_noise_scale():
    assert _chi3_quantile(0.5) == pytest.approx(1.5382, abs=1e-3)  # median of the Maxwell distribution
    rng = np.random.default_rng(1)
    distance = np.linalg.norm(rng.normal(0, 2.5, (200000, 3)), axis=1)
    assert noise_scale(distance, 0.25) == pytest.approx(2.5, rel=0.02)


def test_subtraction_recovers_the_silhouette():
    image, plate, truth = _scene()
    alpha = subtract_background(image, plate)
    assert alpha.dtype == np.float32 and alpha.shape == truth.shape
    assert mask_iou(alpha, truth.astype(np.float32)) > 0.985
    assert alpha[11, 11] == 0.0  # the speckle is not the largest component
    assert alpha[82, 80] == 1.0  # the camouflaged patch is a small hole: filled
    assert ((alpha > 0) & (alpha < 1)).sum() > 0  # a soft edge
    soft = (alpha > 0.02) & (alpha < 0.98)
    assert soft.sum() < 0.1 * truth.sum()  # ... only along the silhouette


def test_lightness_weight_discounts_shading():
    plate = np.full((8, 8, 3), 128, np.uint8)
    darker = np.full((8, 8, 3), 100, np.uint8)
    full, half = lab_distance(darker, plate, 1.0), lab_distance(darker, plate, 0.5)
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-3)  # grey: only lightness differs


def test_no_foreground_gives_an_empty_mask():
    _, plate, _ = _scene(2)
    rng = np.random.default_rng(3)
    again = np.clip(plate + rng.normal(0, 2.0, plate.shape), 0, 255).astype(np.uint8)
    assert subtract_background(again, plate).max() == 0.0


def test_mask_iou():
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 255
    b = np.zeros((4, 4), np.float32)
    b[:1] = 1.0
    assert mask_iou(a, b) == 0.5 and mask_iou(a, a) == 1.0 and mask_iou(b * 0, b * 0) == 1.0


# ---------------------------------------------------------------------------------------------------- matting hook
MODEL_SOURCE = '''
import numpy as np
CALLS = []

def matte(image, background):
    CALLS.append(image.shape)
    difference = np.abs(image.astype(np.int16) - background.astype(np.int16)).sum(-1)
    return (difference > 60).astype(np.uint8) * 255

def wrong_shape(image, background):
    return np.zeros((3, 3), np.float32)

def out_of_range(image, background):
    return np.full(image.shape[:2], 2.0)

NOT_CALLABLE = 3
'''


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_matting.py"
    path.write_text(MODEL_SOURCE)
    return path


def _subject_with_one_view(root, image, plate):
    write_jpeg(root / "images" / "0000" / "image_cam0.jpg", image, quality=100)
    write_jpeg(background_plate_path(root, "cam0"), plate, quality=100)
    return root


def test_matting_model_hook_replaces_subtraction(model_file, tmp_path):
    image, plate, _ = _scene()
    root = _subject_with_one_view(tmp_path / "subject", image, plate)
    model = load_matting_model(f"{model_file}:matte")
    result = remove_background(root, MaskingOptions(matting=model, lowres=40, progress=False))
    assert result.written == 1
    assert sys.modules[model.__module__].CALLS == [(SIZE, SIZE, 3)]
    decoded = [cv2.cvtColor(cv2.imread(str(root / "images/0000/image_cam0.jpg")), cv2.COLOR_BGR2RGB),
               cv2.cvtColor(cv2.imread(str(background_plate_path(root, "cam0"))), cv2.COLOR_BGR2RGB)]
    expected = model(*decoded)
    mask = cv2.imread(str(root / "images/0000/mask_cam0.jpg"), cv2.IMREAD_GRAYSCALE)
    assert mask_iou(mask, expected) > 0.99
    assert cv2.imread(str(root / "images/0000/mask_lowres_cam0.jpg"), cv2.IMREAD_GRAYSCALE).shape == (40, 40)
    again = remove_background(root, MaskingOptions(matting=model, progress=False))
    assert (again.written, again.skipped) == (0, 1)


def test_matting_model_errors(model_file):
    image, plate, _ = _scene()
    for spec, message in [("no_colon", "expected 'package.module:function'"),
                          (f"{model_file.parent / 'missing.py'}:matte", "file not found"),
                          (f"{model_file}:nothing", "has no attribute nothing"),
                          (f"{model_file}:NOT_CALLABLE", "is not callable"),
                          ("surely_not_a_module_xyz:run", "cannot import surely_not_a_module_xyz")]:
        with pytest.raises(MattingModelError, match=message):
            load_matting_model(spec)
    assert load_matting_model("math:sqrt") is math.sqrt  # importable modules work too
    with pytest.raises(MattingModelError, match=r"returned shape \[3, 3\], expected \[160, 160\]"):
        apply_matting(load_matting_model(f"{model_file}:wrong_shape"), image, plate)
    with pytest.raises(MattingModelError, match=r"outside \[0, 1\]"):
        apply_matting(load_matting_model(f"{model_file}:out_of_range"), image, plate)
    alpha = apply_matting(lambda i, b: np.ones(i.shape[:2] + (1,), bool), image, plate)
    assert alpha.shape == (SIZE, SIZE) and alpha.dtype == np.float32 and alpha.min() == 1.0

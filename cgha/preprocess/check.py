"""What is missing or inconsistent in a subject folder (docs/conventions.md layout), all problems at once.

``cgha.dataset.Subject`` stops at the first group of problems a training stage would hit; this check goes through the
whole folder and keeps going, so one run lists everything to fix: missing, empty, truncated or non-JPEG images and
masks; images of different sizes; camera files with wrong keys, shapes, NaNs, a non-rotation, or a principal point
outside the image (intrinsics for another resolution); params with wrong shapes or an expression dimension that
changes between frames (or differs from ``exp_dim``); landmark files that are neither [68, 3] nor [66, 3]; vertex counts that change
between frames; tracker output for frames that have no images; and views where the tracked head lands behind the
camera or outside the image (a world-to-camera / camera-to-world mix-up or a different world frame).
It reuses the dataset's own readers (``cgha.dataset.arrays``), so it accepts exactly what training accepts.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cgha.dataset.arrays import CAMERA_SHAPES, PARAMS_SHAPES, read_npy_rows, read_npz
from cgha.dataset.layout import SubjectLayout
from cgha.dataset.subject import read_landmarks
from cgha.errors import DataError
from cgha.utils.image_io import jpeg_problem

from .calibration import normalize_serial
from .files import jpeg_size

__all__ = ["Problem", "CheckReport", "check_subject"]

@dataclass(frozen=True)
class Problem:
    """One problem: ``where`` is a path relative to the subject with ``{frame}`` standing for ``frame``."""

    where: str
    what: str
    frame: str = ""

    def path(self) -> str:
        return self.where.replace("{frame}", self.frame)


@dataclass
class CheckReport:
    """Problems found in a subject folder, plus a summary of what is there."""

    root: Path
    frames: List[str] = field(default_factory=list)
    cameras: List[str] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    summary: Dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, examples: int = 3) -> List[str]:
        """One line per kind of problem and file pattern: ``where: what (n frames: a, b, ...)``."""
        groups: Dict[Tuple[str, str], List[str]] = defaultdict(list)
        for problem in self.problems:
            groups[(problem.where, problem.what)].append(problem.frame)
        out = []
        for (where, what), frames in groups.items():
            frames = [frame for frame in frames if frame]
            if len(frames) <= 1:
                line = f"{where.replace('{frame}', frames[0]) if frames else where}: {what}"
            else:
                shown = ", ".join(frames[:examples]) + (", ..." if len(frames) > examples else "")
                line = f"{where}: {what} ({len(frames)} frames: {shown})"
            out.append(line)
        return out


def check_subject(root, cameras: Optional[Sequence[str]] = None, exp_dim: Optional[int] = None,
                  lowres: bool = True, workers: int = 8) -> CheckReport:
    """Check a subject folder; never raises for data problems (they are in the report).

    Args:
        cameras: cameras that must be present (default: every camera that has an image in some frame).
        exp_dim: expected expression dimension (the config's gaussianheadmodule.exp_coeffs_dim), if known.
        lowres: require the image_lowres / mask_lowres copies (the mesh stage reads them).
    """
    report = CheckReport(Path(root))
    layout = SubjectLayout(report.root)
    try:
        report.frames = layout.frames()
        layout.meta()
    except DataError as error:
        report.problems.append(Problem(".", str(error)))
        return report
    present = {frame: layout.cameras_in(frame) for frame in report.frames}
    found = sorted({camera for names in present.values() for camera in names})
    report.cameras = found if cameras is None else list(dict.fromkeys(normalize_serial(c) for c in cameras))
    if not report.cameras:
        report.problems.append(Problem("images", "no image_<camera>.jpg in any frame"))
        return report

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        per_frame = list(pool.map(lambda frame: _check_frame(layout, frame, report.cameras, lowres), report.frames))
    for problems, _ in per_frame:
        report.problems += problems
    frame_data = {frame: data for frame, (_, data) in zip(report.frames, per_frame)}
    _check_across_frames(report, frame_data, exp_dim)
    _check_stray_frames(report, layout)
    return report


# ------------------------------------------------------------------------------------------------ per frame
def _check_frame(layout: SubjectLayout, frame: str, cameras: List[str], lowres: bool):
    """(problems, data) of one frame; data holds what the cross-frame checks need."""
    problems: List[Problem] = []

    def add(path: Path, what: str) -> None:
        relative = str(path.relative_to(layout.root)).replace(os.sep, "/")
        problems.append(Problem(relative.replace(f"/{frame}/", "/{frame}/", 1), what, frame))

    data = {"sizes": {}, "lowres_sizes": {}, "cameras": {}, "params": None, "landmarks": None, "vertices": None}
    for camera in cameras:
        pairs = [(layout.image(frame, camera), layout.mask(frame, camera), "sizes")]
        if lowres:
            pairs.append((layout.image(frame, camera, True), layout.mask(frame, camera, True), "lowres_sizes"))
        for image, mask, key in pairs:
            sizes = []
            for path in (image, mask):
                problem = jpeg_problem(path)
                if problem is not None:
                    add(path, problem)
                    continue
                size = jpeg_size(path)
                if size is None:
                    add(path, "no JPEG frame header")
                    continue
                if size[0] != size[1]:
                    add(path, f"not square ({size[0]}x{size[1]})")
                sizes.append(size)
            if len(sizes) == 2 and sizes[0] != sizes[1]:
                add(mask, f"is {sizes[1][0]}x{sizes[1][1]} but its image is {sizes[0][0]}x{sizes[0][1]}")
            if sizes:
                data[key][camera] = sizes[0]
        visible = layout.visible(frame, camera)
        if visible.exists() and jpeg_problem(visible) is not None:
            add(visible, jpeg_problem(visible))
        _check_camera(layout.camera(frame, camera), data["sizes"].get(camera), data["cameras"], camera, add)
    _check_params(layout, frame, data, add)
    return problems, data


def _check_camera(path: Path, size, cameras: Dict, camera: str, add) -> None:
    try:
        arrays = read_npz(path, CAMERA_SHAPES)
    except DataError as error:
        add(path, _reason(error, path))
        return
    K, E = arrays["intrinsic"].astype(np.float64), arrays["extrinsic"].astype(np.float64)
    rotation = E[:, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0:
        add(path, "extrinsic[:, :3] is not a rotation matrix")
        return
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        add(path, "intrinsic is not a pinhole matrix (fx, fy > 0, last row 0 0 1)")
        return
    if size is not None and not (0.0 <= K[0, 2] <= size[0] and 0.0 <= K[1, 2] <= size[1]):
        add(path, f"principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) lies outside the {size[0]}x{size[1]} image: "
                  "intrinsics for another resolution?")
        return
    cameras[camera] = (K, E)  # only sound cameras go on to the projection check


def _check_params(layout: SubjectLayout, frame: str, data: Dict, add) -> None:
    try:
        data["params"] = read_npz(layout.params(frame), PARAMS_SHAPES)
    except DataError as error:
        add(layout.params(frame), _reason(error, layout.params(frame)))
    try:
        data["landmarks"] = read_landmarks(layout.landmarks(frame))
    except DataError as error:
        add(layout.landmarks(frame), _reason(error, layout.landmarks(frame)))
    try:
        data["vertices"] = read_npy_rows(layout.vertices(frame), (None, 3))
    except DataError as error:
        add(layout.vertices(frame), _reason(error, layout.vertices(frame)))


def _reason(error: DataError, path: Path) -> str:
    """The dataset reader's message without the path it starts with (the report shows the path)."""
    text = str(error)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text


# --------------------------------------------------------------------------------------------- across frames
def _majority(values):
    return Counter(values).most_common(1)[0][0] if values else None


def _check_across_frames(report: CheckReport, frame_data: Dict[str, Dict], exp_dim: Optional[int]) -> None:
    for key, name in (("sizes", "image_{camera}.jpg"), ("lowres_sizes", "image_lowres_{camera}.jpg")):
        sizes = [size for data in frame_data.values() for size in data[key].values()]
        usual = _majority(sizes)
        for frame, data in frame_data.items():
            for camera, size in data[key].items():
                if size != usual:
                    report.problems.append(Problem(f"images/{{frame}}/{name.format(camera=camera)}",
                                                   f"is {size[0]}x{size[1]}, most images are {usual[0]}x{usual[1]}",
                                                   frame))
    dims = [data["params"]["exp_coeff"].shape[1] for data in frame_data.values() if data["params"] is not None]
    expected = exp_dim if exp_dim is not None else _majority(dims)
    origin = "--exp-dim" if exp_dim is not None else "most frames"
    counts = [len(data["vertices"]) for data in frame_data.values() if data["vertices"] is not None]
    usual_count = _majority(counts)
    for frame, data in frame_data.items():
        params = data["params"]
        if params is not None and params["exp_coeff"].shape[1] != expected:
            report.problems.append(Problem("params/{frame}/params.npz", f"exp_coeff has {params['exp_coeff'].shape[1]} "
                                           f"coefficients, {origin}: {expected}", frame))
        if data["vertices"] is not None and len(data["vertices"]) != usual_count:
            report.problems.append(Problem("params/{frame}/vertices.npy", f"{len(data['vertices'])} vertices, most "
                                           f"frames have {usual_count}", frame))
        _check_projection(report, frame, data)
    if frame_data:
        first = next(iter(frame_data.values()))
        report.summary = {"frames": len(report.frames), "cameras": len(report.cameras),
                          "image_size": _majority([s for d in frame_data.values() for s in d["sizes"].values()]),
                          "exp_dim": expected, "vertices": usual_count,
                          "landmarks": None if first["landmarks"] is None else len(first["landmarks"])}


def _check_projection(report: CheckReport, frame: str, data: Dict) -> None:
    """The tracked head (mean of the landmarks) must be in front of every camera and inside its image."""
    points = data["landmarks"] if data["landmarks"] is not None else data["vertices"]
    if points is None or not len(points):
        return
    centre = points.astype(np.float64).mean(0)
    for camera, (K, E) in data["cameras"].items():
        size = data["sizes"].get(camera)
        z = E[2, :3] @ centre + E[2, 3]
        if z <= 0.01:
            what = "the tracked head is behind this camera (extrinsic must be world-to-camera, OpenCV axes)"
        elif size is not None:
            u, v, w = K @ (E[:, :3] @ centre + E[:, 3])
            if 0.0 <= u / w <= size[0] and 0.0 <= v / w <= size[1]:
                continue
            what = (f"the tracked head projects to ({u / w:.0f}, {v / w:.0f}), outside the {size[0]}x{size[1]} "
                    "image (extrinsic not world-to-camera, or cameras and tracker in different world frames?)")
        else:
            continue
        report.problems.append(Problem(f"cameras/{{frame}}/camera_{camera}.npz", what, frame))


def _check_stray_frames(report: CheckReport, layout: SubjectLayout) -> None:
    frames = set(report.frames)
    for folder in ("params", "cameras"):
        base = layout.root / folder
        if not base.is_dir():
            continue
        stray = sorted(entry.name for entry in os.scandir(base) if entry.is_dir() and entry.name not in frames)
        for frame in stray:
            report.problems.append(Problem(f"{folder}/{{frame}}", "has no images/ folder of the same name "
                                                                  "(frame names differ between image and tracker "
                                                                  "output?)", frame))

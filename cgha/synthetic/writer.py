"""Write a synthetic subject in the GHA / NeRSemble-preprocessed layout (see docs/conventions.md).

    generate_subject("data/synthetic_id0", identity=0, frames=40, cameras=16, resolution=512, seed=0)

Everything is written into a temporary sibling folder that is renamed into place at the end, so an interrupted
run never leaves a folder that looks complete. An existing subject whose ``meta.json`` records the same generator
version and arguments is reused as is (unless ``force``); one this generator wrote with the same arguments at another
version is regenerated in place (it is our own output, only older).

Besides the rig's cameras ``camNN`` every frame is rendered from evaluation-only out-of-rig cameras ``oorNN``
(`cgha.synthetic.capture.out_of_rig_cameras`), listed in ``meta.json`` under ``splits.out_of_rig_camera_ids``.

The monocular preset (``generate_monocular_subject``) writes the same layout for tracking and monocular avatars: one
training camera ``cam00`` straight ahead, a person talking with wide head turns (yaw +-40, pitch +-20 degrees;
``trajectory.talking_expression_trajectory`` / ``monocular_pose_trajectory``), and one evaluation-only camera
``oor00`` (``capture.monocular_cameras``) recorded like the out-of-rig cameras; ``meta.json`` adds
``"preset": "monocular"`` and a ``monocular`` section. Subjects without a preset are written exactly as before.
"""
from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cgha.errors import UserError
from cgha.utils.atomic import write_directory_atomic

from .background import camera_backgrounds
from .capture import CameraRig, camera_rig, monocular_cameras, out_of_rig_cameras
from .expression import EXP_DIM, EXPRESSION_MODEL, EXPRESSION_NAMES
from .head_model import DEFAULT_SCALE, HeadModel
from .render import DEFAULT_LIGHT, render_views
from .texture import HeadTexture
from .trajectory import (MONOCULAR_FRAMES, MONOCULAR_POSE_LIMITS_DEG, expression_trajectory,
                         monocular_pose_trajectory, pose_trajectory, talking_expression_trajectory)

__all__ = ["GENERATOR", "GENERATOR_VERSION", "SubjectArgumentError", "generate_subject", "generate_monocular_subject",
           "recommended_splits", "frame_names", "MONOCULAR_PRESET"]

GENERATOR = "cgha.synthetic"
GENERATOR_VERSION = "1.2.0"  # 1.1.0: out-of-rig cameras oor00..oor04; 1.2.0: faces.npy (the mesh's triangles)
_JPEG_QUALITY = 95
DEFAULT_LOWRES = 256  # GHA's image_lowres side, used when the images are at least this large
_PREVIEW_THUMB = 128
MONOCULAR_PRESET = "monocular"  # meta.json "preset" (and "arguments.preset") of generate_monocular_subject's subjects
_OUT_OF_RIG_USE = ("evaluation only, never trained on: above the top row (+35 deg), beyond both ends of the arc "
                   "(azimuth -90 / +90 deg), 1.3x closer (focal narrowed so the head stays in the image) and "
                   "1.3x farther than the rig")


class SubjectArgumentError(UserError, ValueError):
    """A bad argument to the synthetic-subject generator, or a target folder it must not overwrite."""


def frame_names(num_frames: int) -> list[str]:
    """Frame folder names ``0000``, ``0001``, ..."""
    return [f"{i:04d}" for i in range(num_frames)]


def recommended_splits(camera_ids: list[str], azimuth_deg: list[float], elevation_deg: list[float],
                       frames: list[str]) -> dict[str, list[str]]:
    """Held-out cameras and frames for evaluation.

    Cameras: none for <= 3 cameras; otherwise ``round(C / 8)`` (at least 1) spread across the arc, never the
    most frontal one. Frames: the last ~10 % (at least one when there are >= 4 frames).
    """
    C = len(camera_ids)
    eval_cams: list[str] = []
    if C > 3:
        frontal = int(np.argmin([np.hypot(a, e) for a, e in zip(azimuth_deg, elevation_deg)]))
        candidates = [i for i in np.argsort(azimuth_deg, kind="stable").tolist() if i != frontal]
        k = max(1, int(round(C / 8.0)))
        picks = sorted({candidates[int(round((j + 0.5) * len(candidates) / k - 0.5))] for j in range(k)})
        eval_cams = [camera_ids[i] for i in picks]
    F = len(frames)
    n_eval = max(1, int(round(0.1 * F))) if F >= 4 else 0
    eval_frames = frames[F - n_eval:] if n_eval else []
    return {
        "eval_camera_ids": eval_cams,
        "eval_frame_ids": eval_frames,
        "train_camera_ids": [c for c in camera_ids if c not in eval_cams],
        "train_frame_ids": [f for f in frames if f not in eval_frames],
    }


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SubjectArgumentError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise SubjectArgumentError(f"{name} must be {bound}, got {value}")
    return int(value)


def _arguments(identity, frames, cameras, resolution, seed, lowres) -> dict:
    resolution = check_int("resolution", resolution, 16, 8192)
    return {
        "identity": check_int("identity", identity, 0),
        "frames": check_int("frames", frames, 1, 100000),
        "cameras": check_int("cameras", cameras, 1, 100),
        "resolution": resolution,
        "seed": check_int("seed", seed, 0, 2**32 - 1),
        "lowres": _lowres(lowres, resolution),
    }


def _lowres(lowres, resolution: int) -> int:
    """The side of the low-res copies: DEFAULT_LOWRES or the image side when smaller; never above the image side,
    since a "low-res" copy larger than its image only costs disk and time and upsamples nothing useful."""
    if lowres is None:
        return min(DEFAULT_LOWRES, resolution)
    lowres = check_int("lowres", lowres, 8, 8192)
    if lowres > resolution:
        raise SubjectArgumentError(f"lowres {lowres} is larger than resolution {resolution}: low-res copies are "
                                   f"never larger than the images (omit it for min({DEFAULT_LOWRES}, resolution))")
    return lowres


def _existing_meta(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez`` but byte-for-byte reproducible (``np.savez`` stamps the current time into the zip)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    """uint8 RGB [H, W, 3] or gray [H, W] -> JPEG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """[C, H, W] float in [0, 1] -> [H, W, C] uint8 (C = 3) or [H, W] (C = 1)."""
    a = (t.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    interp = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def _preview_picks(num: int, want: int) -> list[int]:
    """``want`` indices spread evenly over ``range(num)`` (all of them when there are few)."""
    if num <= want:
        return list(range(num))
    return sorted({int(round(i * (num - 1) / (want - 1))) for i in range(want)})


def _preview_frames(exp: np.ndarray, want: int = 4) -> list[int]:
    """The first frame plus the frames where the jaw is most open, the eyes most closed and the smile widest,
    topped up with evenly spread frames: the contact sheet shows the expression range at a glance."""
    E = {n: i for i, n in enumerate(EXPRESSION_NAMES)}
    picks = [0, int(exp[:, E["jaw_open"]].argmax()),
             int((exp[:, E["blink_left"]] + exp[:, E["blink_right"]]).argmax()), int(exp[:, E["smile"]].argmax())]
    out: list[int] = []
    for f in picks + _preview_picks(exp.shape[0], want):
        if f not in out and len(out) < want:
            out.append(f)
    return sorted(out)


def _contact_sheet(thumbs: dict, frames: list[int], cams: list[int], frame_names_: list[str], cam_ids: list[str]):
    """Grid of thumbnails: one row per frame, one column per camera, labelled."""
    t = _PREVIEW_THUMB
    sheet = np.full((len(frames) * t, len(cams) * t, 3), 255, dtype=np.uint8)
    for r, f in enumerate(frames):
        for c, cam in enumerate(cams):
            tile = thumbs[(f, cam)].copy()
            tile[-13:] = tile[-13:] // 3  # a dark strip keeps the label readable on any background
            label = f"{frame_names_[f]} {cam_ids[cam]}"
            cv2.putText(tile, label, (3, t - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
            sheet[r * t:(r + 1) * t, c * t:(c + 1) * t] = tile
    return sheet


def generate_subject(out_dir, identity: int = 0, frames: int = 40, cameras: int = 16, resolution: int = 512,
                     seed: int = 0, lowres: int | None = None, progress: bool = True, force: bool = False,
                     device="cpu", camera_color_spread: float = 0.0) -> Path:
    """Generate (or reuse) a synthetic subject.

    Args:
        out_dir: subject folder to create.
        identity: identity index (shape and colours); independent of ``seed``.
        frames, cameras: numbers of frames and cameras.
        resolution: image side in pixels (intrinsics are in these pixels).
        seed: seed of the expression and pose trajectories.
        lowres: side of the ``*_lowres_*`` copies, at most ``resolution``; None = min(256, resolution).
        progress: show a tqdm bar.
        force: regenerate even if a matching subject exists, and replace a non-matching folder.
        device: torch device for rendering.
        camera_color_spread: > 0 gives every camera its own colour: each RGB channel of its images is multiplied
            by a gain exp(u), u uniform in [-spread, spread] (drawn from ``seed``), as the exposure and white balance
            of a real rig's cameras differ; the gains are in ``meta.json`` ``cameras.color_gains``. 0: none.
    Returns:
        The subject folder.
    Raises:
        SubjectArgumentError: bad arguments, or ``out_dir`` exists, is not this subject and ``force`` is off.
    """
    args = _arguments(identity, frames, cameras, resolution, seed, lowres)
    spread = float(camera_color_spread)
    if not 0.0 <= spread <= 1.0:
        raise SubjectArgumentError(f"camera_color_spread must be in [0, 1], got {camera_color_spread}")
    if spread > 0:  # absent at 0, so subjects made before the option keep their arguments (and are reused)
        args["camera_color_spread"] = spread
    return _generate(out_dir, args, progress, force, device)


def camera_color_gains(num_cameras: int, spread: float, seed: int) -> np.ndarray:
    """[num_cameras, 3] per-camera RGB gains exp(u), u ~ U(-spread, spread); all ones at spread 0."""
    rng = np.random.default_rng([seed, 0xC0105])
    return np.exp(rng.uniform(-spread, spread, size=(num_cameras, 3))).astype(np.float32)


def generate_monocular_subject(out_dir, identity: int = 0, frames: int = MONOCULAR_FRAMES, resolution: int = 512,
                               seed: int = 0, lowres: int | None = None, progress: bool = True, force: bool = False,
                               device="cpu") -> Path:
    """Generate (or reuse) a monocular synthetic subject: one training camera, talking, wide head turns.

    Same layout and reuse rules as ``generate_subject``. Cameras: ``cam00`` (training, straight ahead) and ``oor00``
    (evaluation only: ``meta.json`` ``splits.out_of_rig_camera_ids``, so ``cgha.dataset.Subject`` never trains on
    it). Held-out frames: the last ~10 % (``splits.eval_frame_ids``). The default 300 frames sweep yaw over +-40 and
    pitch over +-20 degrees (``meta.json`` ``monocular.pose_limits_deg``).

    Args:
        out_dir: subject folder to create.
        identity: identity index (shape and colours).
        frames: number of frames (default ``MONOCULAR_FRAMES`` = 300; fewer frames cover less of the sweep).
        resolution: image side in pixels; ``lowres``, ``progress``, ``force``, ``device``: as ``generate_subject``.
        seed: seed of the expression and pose trajectories.
    Returns:
        The subject folder.
    Raises:
        SubjectArgumentError: bad arguments, or ``out_dir`` exists, is not this subject and ``force`` is off.
    """
    args = {"preset": MONOCULAR_PRESET, **_arguments(identity, frames, 1, resolution, seed, lowres)}
    del args["cameras"]  # not an argument of the preset: always one training camera
    return _generate(out_dir, args, progress, force, device)


def _generate(out_dir, args: dict, progress: bool, force: bool, device) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SubjectArgumentError(f"{out_dir} exists and is not a folder")
    if out_dir.exists() and not force:
        existing = _existing_meta(out_dir)
        ours = bool(existing) and existing.get("generator") == GENERATOR and existing.get("arguments") == args
        if ours and existing.get("generator_version") == GENERATOR_VERSION:
            return out_dir
        if not ours:
            raise SubjectArgumentError(
                f"{out_dir} already exists and is not a synthetic subject with these arguments; "
                "choose another folder or pass --force (force=True) to replace it")
    return write_directory_atomic(out_dir, lambda tmp: _write_subject(tmp, args, progress, torch.device(device)))


def _write_frame(root: Path, name: str, cam_ids: list[str], frame: dict, lowres: int, intrinsics: np.ndarray,
                 extrinsics: np.ndarray, params: dict) -> None:
    """All files of one frame: images, masks, low-res copies, cameras, params, landmarks, vertices."""
    img_dir = root / "images" / name
    cam_dir = root / "cameras" / name
    par_dir = root / "params" / name
    for d in (img_dir, cam_dir, par_dir):
        d.mkdir(parents=True)
    for c, cam in enumerate(cam_ids):
        rgb, mask = frame["rgb"][c], frame["mask"][c]
        _write_jpeg(img_dir / f"image_{cam}.jpg", rgb)
        _write_jpeg(img_dir / f"mask_{cam}.jpg", mask)
        _write_jpeg(img_dir / f"image_lowres_{cam}.jpg", _resize(rgb, lowres))
        _write_jpeg(img_dir / f"mask_lowres_{cam}.jpg", _resize(mask, lowres))
        _save_npz(cam_dir / f"camera_{cam}.npz", intrinsic=intrinsics[c], extrinsic=extrinsics[c])
    _save_npz(par_dir / "params.npz", **params)
    np.save(par_dir / "lmk_3d.npy", frame["landmarks"])
    np.save(par_dir / "vertices.npy", frame["vertices"])


def _capture_plan(args: dict, device: torch.device) -> tuple[CameraRig, CameraRig, np.ndarray, np.ndarray, str]:
    """What a preset films: (training rig, evaluation-only cameras, expressions [F, D], poses [F, 6], the
    evaluation-only cameras' description for meta.json)."""
    R, F, seed = args["resolution"], args["frames"], args["seed"]
    if args.get("preset") == MONOCULAR_PRESET:
        rig, held_out = monocular_cameras(R, device=device)
        use = (f"evaluation only, never trained on: a second view of the monocular sequence (azimuth "
               f"{held_out.azimuth_deg[0]:g} deg, elevation {held_out.elevation_deg[0]:g} deg)")
        return rig, held_out, talking_expression_trajectory(F, seed), monocular_pose_trajectory(F, seed), use
    if "preset" in args:
        raise SubjectArgumentError(f"unknown synthetic preset {args['preset']!r} (known: {MONOCULAR_PRESET!r})")
    return (camera_rig(args["cameras"], R, device=device), out_of_rig_cameras(args["cameras"], R, device=device),
            expression_trajectory(F, seed), pose_trajectory(F, seed), _OUT_OF_RIG_USE)


def _write_subject(root: Path, args: dict, progress: bool, device: torch.device) -> None:
    R, L = args["resolution"], args["lowres"]
    head = HeadModel(args["identity"], device=device)
    texture = HeadTexture(head.params, head.layout, device=device)
    rig, out_of_rig, exp_traj, pose_traj, out_of_rig_use = _capture_plan(args, device)
    # Rig and out-of-rig views of a frame are rendered in one call; the out-of-rig backgrounds follow the rig's.
    cam_ids = rig.ids + out_of_rig.ids
    viewmats = torch.cat([rig.viewmats, out_of_rig.viewmats])
    Ks = torch.cat([rig.Ks, out_of_rig.Ks])
    backgrounds = camera_backgrounds(len(cam_ids), R, R, device=device)
    gains = camera_color_gains(len(cam_ids), args.get("camera_color_spread", 0.0), args["seed"])
    gains_t = torch.from_numpy(gains).to(device)[:, :, None, None]
    names = frame_names(args["frames"])
    scale = np.array([DEFAULT_SCALE], dtype=np.float32)
    intrinsic = rig.Ks[0].cpu().numpy().astype(np.float32)
    intrinsics = Ks.cpu().numpy().astype(np.float32)
    extrinsics = viewmats[:, :3, :].cpu().numpy().astype(np.float32)

    preview_frames = _preview_frames(exp_traj)
    preview_cams = _preview_picks(len(rig.ids), 5)
    thumbs = {}
    bar = tqdm(range(args["frames"]), desc=f"synthetic subject id{args['identity']}", unit="frame",
               disable=not progress)
    # JPEG encoding and file writes of frame f overlap with rendering frame f + 1 (OpenCV releases the GIL);
    # at most one frame is pending, which bounds memory.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for f in bar:
            out = render_views(head, texture, torch.from_numpy(exp_traj[f]), torch.from_numpy(pose_traj[f]),
                               float(scale[0]), viewmats, Ks, R, R, backgrounds)
            frame = {
                "rgb": [_to_uint8(img) for img in out["image"] * gains_t],
                "mask": [_to_uint8(m) for m in out["mask"]],
                "landmarks": out["landmarks"].cpu().numpy().astype(np.float32),
                "vertices": out["vertices"].cpu().numpy().astype(np.float32),
            }
            for c in preview_cams if f in preview_frames else ():
                thumbs[(f, c)] = cv2.resize(frame["rgb"][c], (_PREVIEW_THUMB, _PREVIEW_THUMB),
                                            interpolation=cv2.INTER_AREA)
            if pending is not None:
                pending.result()
            pending = pool.submit(_write_frame, root, names[f], cam_ids, frame, L, intrinsics, extrinsics,
                                  {"pose": pose_traj[f][None].astype(np.float32), "scale": scale,
                                   "exp_coeff": exp_traj[f][None].astype(np.float32)})
        if pending is not None:
            pending.result()

    # The triangles of vertices.npy, as tracked subjects write them: mesh-rigged avatars bind Gaussians to them.
    np.save(root / "faces.npy", head.faces.cpu().numpy().astype(np.int64))
    sheet = _contact_sheet(thumbs, preview_frames, preview_cams, names, rig.ids)
    _write_jpeg(root / "preview.jpg", sheet)
    splits = {**recommended_splits(rig.ids, rig.azimuth_deg, rig.elevation_deg, names),
              "out_of_rig_camera_ids": out_of_rig.ids}
    meta = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "arguments": args,
        "identity": head.params.to_dict(),
        "expression_names": list(EXPRESSION_NAMES),
        "expression_basis": {"model": EXPRESSION_MODEL, "names": list(EXPRESSION_NAMES)},
        "exp_dim": EXP_DIM,
        "camera_ids": cam_ids,
        "frame_names": names,
        "original_resolution": R,
        "lowres_resolution": L,
        "num_vertices": head.num_vertices,
        "num_faces": int(head.faces.shape[0]),
        "faces": "faces.npy",
        "landmarks": "iBUG-68 (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67)",
        "scale": float(scale[0]),
        "cameras": {
            "azimuth_deg": rig.azimuth_deg,
            "elevation_deg": rig.elevation_deg,
            "distance": rig.distance,
            "focal_px": float(intrinsic[0, 0]),
            "focal_fraction": rig.focal_fraction,
            "out_of_rig": {
                "ids": out_of_rig.ids,
                "azimuth_deg": out_of_rig.azimuth_deg,
                "elevation_deg": out_of_rig.elevation_deg,
                "distance": out_of_rig.distance,
                "focal_px": [float(K[0, 0]) for K in intrinsics[len(rig.ids):]],
                "use": out_of_rig_use,
            },
            **({"color_gains": {cam: [round(float(g), 6) for g in gain] for cam, gain in zip(cam_ids, gains)}}
               if "camera_color_spread" in args else {}),
            "convention": "extrinsic = world-to-camera [3, 4], OpenCV axes; intrinsic in pixels at "
                          "original_resolution, pixel (u, v) centred at (u + 0.5, v + 0.5)",
        },
        "head_pose": "world = R(pose[:3]) @ (scale * x_canonical) + pose[3:]; canonical: face +z, y up, "
                     "x to the subject's left",
        "light": {"direction_to_light": list(DEFAULT_LIGHT.direction), "diffuse": DEFAULT_LIGHT.diffuse,
                  "ambient_sky": DEFAULT_LIGHT.ambient_sky, "ambient_ground": DEFAULT_LIGHT.ambient_ground},
        "splits": splits,
    }
    if args.get("preset") == MONOCULAR_PRESET:
        meta["preset"] = MONOCULAR_PRESET
        meta["monocular"] = {
            "train_camera_id": rig.ids[0],
            "held_out_camera_id": out_of_rig.ids[0],
            "pose_limits_deg": {"yaw": MONOCULAR_POSE_LIMITS_DEG[0], "pitch": MONOCULAR_POSE_LIMITS_DEG[1],
                                "roll": MONOCULAR_POSE_LIMITS_DEG[2]},
            "pose": "yaw and pitch sweep their full range in every run of >= 150 frames (yaw period 90-110 "
                    "frames, pitch 125-150); euler angles of R = Ry(yaw) Rx(pitch) Rz(roll) "
                    "(cgha.synthetic.trajectory.matrix_to_euler)",
            "expressions": "talking: syllable-rate jaw_open with pucker / mouth_stretch visemes in phrases, smile "
                           "swells, blinks, brow raises at phrase starts, occasional events of the others",
        }
    # meta.json last: a folder with it is complete.
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

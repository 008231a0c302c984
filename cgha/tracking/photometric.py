"""Photometric refinement of a landmark fit: analysis by synthesis of the face region.

Landmarks from MediaPipe carry view- and expression-dependent biases that the calibration only partly removes
(docs/tracking.md: about 0.9 deg of head rotation left on a rig, 3 deg with one camera). The images themselves have
no such bias. This stage renders the face model's face region (forehead to chin, ear to ear) at the landmark fit's
parameters with

    colour(pixel) = gain_c * albedo(surface) * shading(world normal) + bias_c

where ``albedo`` is one RGB value per vertex shared by every frame and view, ``shading`` a second-order spherical
harmonic of the world-space normal (the light is fixed in the world: the head turning under it is signal, not
noise), and ``gain_c`` / ``bias_c`` a colour correction per camera (camera 0 fixed), and refines each frame's head
pose (and optionally its expression) by Adam on a robust colour difference against the images (Charbonnier), with
a weak prior tying the refinement to the landmark fit (several cameras only: one camera's landmark fit is biased)
and a temporal smoothness term. Albedo, lighting and colour corrections are estimated on the fly: first from the
images at the landmark fit (``warmup`` iterations with the poses fixed, starting from the pixels' average colour per
vertex), then jointly with the poses.

Each view is compared in a square crop around the face region's projection at the landmark fit
(``crop_px`` pixels), so the cost per view does not depend on the image size. Gradients reach the pose through the
perspective-correct interpolation of the mesh rasterizer (``cgha.render.mesh.rasterize_mesh``: colours slide
over the surface as the head moves) and through the world normals of the shading.

    region = face_region_faces(model, identity, config)
    views = prepare_views(model, identity, exp, pose, scale, frames_images, Ks, viewmats, region, config)
    result = refine_photometric(model, identity, exp, pose, scale, views, viewmats, region, config, device)

Limits: the face model has no hair, beard, glasses or teeth; the face region stops below the hairline and the
Charbonnier loss keeps the influence of what it does not model (a fringe, a hand) bounded, but a face mostly hidden
will refine to something wrong (on a rig the prior keeps the change small).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from cgha.render.mesh import rasterize_mesh
from cgha.synthetic.topology import vertex_normals
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .face_model import FaceModel
from .view_weights import view_angles_deg

__all__ = ["PhotometricConfig", "PhotometricResult", "FaceView", "face_region_faces", "face_view", "prepare_views",
           "refine_photometric", "pose_prior_weight", "sh_basis", "RIG_PRIOR_WEIGHT"]

# The poses' prior toward the landmark fit when several cameras see the face (PhotometricConfig.prior_weight): a
# rig's landmark fit is close (about 0.9 deg) and the prior steadies the refinement there (measured: without it the
# rig's rotation error grew, 0.51 / 0.61 -> 0.64 / 1.06 deg on identities 0 / 1).
RIG_PRIOR_WEIGHT = 1e-3
# iBUG-68 indices that bound the face region on the subject's own neutral shape.
_JAW_LEFT, _CHIN, _JAW_RIGHT, _BROWS = 0, 8, 16, (19, 24)


@dataclasses.dataclass(frozen=True)
class PhotometricConfig:
    """Schedule and weights of ``refine_photometric``."""

    crop_px: int = 128  # side of the square face crop each view is compared at
    crop_margin: float = 1.15  # crop side / larger side of the face region's projected bounds
    max_view_deg: float = 75.0  # views seeing the face more obliquely than this (from frontal) are not used
    warmup: int = 30  # iterations fitting albedo, lighting and colour corrections only
    iterations: int = 120  # iterations after the warm-up, poses refined too
    views_per_chunk: int = 32  # views rendered at once (gradients are accumulated over all views per iteration)
    lr_albedo: float = 0.02
    lr_light: float = 0.01
    lr_colour: float = 0.005
    lr_rotation_deg: float = 0.15  # Adam step of the per-frame rotation change, degrees
    lr_translation: float = 1.5e-3  # ... of the per-frame translation change, head-scale units
    lr_expression: float = 0.01
    lr_identity: float = 0.01
    albedo_refresh: int = 0  # 0: albedo optimised with the poses; N: frozen then, re-estimated every N iterations
    refine_expression: bool = False
    refine_identity: bool = False  # the shared identity code too (the landmark fit's shape carries its biases)
    charbonnier: float = 0.02  # colour difference (0-1 scale) below which the loss is quadratic
    # Prior of the poses toward the landmark fit: prior_weight times the mean over frames of the squared (change /
    # deviation). None: RIG_PRIOR_WEIGHT when the views come from several cameras, 0 from one camera, whose landmark
    # fit carries a pitch bias the prior would hold on to (docs/tracking.md, "Photometric refinement": measured).
    prior_weight: Optional[float] = None
    prior_rotation_deg: float = 3.0  # deviation of the refinement from the landmark fit at which the prior costs
    prior_translation: float = 0.05  # ... as much as (head-scale units)
    expression_prior_weight: float = 1e-3  # the same prior of the expressions (with refine_expression) ...
    prior_expression: float = 0.3  # ... at this deviation (coefficients)
    identity_prior: float = 1e-4  # times |identity|^2 (unit-Gaussian code; with refine_identity)
    smooth_weight: float = 1e-2  # times the squared second difference of the change over consecutive frames
    region_forehead: float = 0.35  # face region's top: brows + this fraction of the brow-to-chin height
    region_margin: float = 0.03  # face region's margin beyond the jaw ends and the chin (canonical units)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if isinstance(value, float) and (not math.isfinite(value) or value < 0):
                raise ValueError(f"PhotometricConfig.{f.name} must be finite and >= 0, got {value}")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"PhotometricConfig.{f.name} must be >= 0, got {value}")
        if self.warmup + self.iterations < 1:
            raise ValueError("PhotometricConfig: warmup + iterations must be >= 1")
        if self.crop_px < 16 or self.views_per_chunk < 1 or not self.crop_margin >= 1.0:
            raise ValueError(f"PhotometricConfig: crop_px >= 16, views_per_chunk >= 1 and crop_margin >= 1 needed, "
                             f"got {self.crop_px}, {self.views_per_chunk}, {self.crop_margin}")
        if not 0 < self.max_view_deg < 90 or not self.charbonnier > 0:
            raise ValueError("PhotometricConfig: max_view_deg must be in (0, 90) and charbonnier > 0, got "
                             f"{self.max_view_deg}, {self.charbonnier}")


@dataclasses.dataclass
class FaceView:
    """One view of one frame, cropped around the face: what the refinement compares against.

    Attributes:
        frame, camera: indices into the fit's frames and cameras.
        image: [3, S, S] float32 in [0, 1].
        K: [3, 3] intrinsics of the crop (pixel (u, v) centre at (u + 0.5, v + 0.5)).
    """

    frame: int
    camera: int
    image: torch.Tensor
    K: torch.Tensor


@dataclasses.dataclass
class PhotometricResult:
    """Refined parameters (float64 numpy, the fit's layout) and what the refinement did.

    Attributes:
        pose: [T, 6] axis-angle + translation.
        exp: [T, 16] expression coefficients.
        identity: [K] identity code.
        views: number of views compared.
        loss: {"start": photometric loss after the warm-up (at the landmark fit's poses; the last loss without
            refinement iterations), "end": after the refinement}.
        rotation_change_deg: [T] angle between the landmark fit's and the refined rotation.
        iterations: iterations run (warm-up included).
        prior_weight: the weight the poses' prior toward the landmark fit had (``pose_prior_weight``).
    """

    pose: np.ndarray
    exp: np.ndarray
    identity: np.ndarray
    views: int
    loss: Dict[str, float]
    rotation_change_deg: np.ndarray
    iterations: int
    prior_weight: float


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to order 2 (constants folded into the coefficients): [..., 3] -> [..., 9]."""
    x, y, z = normals.unbind(-1)
    return torch.stack([torch.ones_like(x), x, y, z, x * y, y * z, 3.0 * z * z - 1.0, x * z, x * x - y * y], -1)


def face_region_faces(model: FaceModel, identity: torch.Tensor, config: PhotometricConfig) -> torch.Tensor:
    """Triangles of the face region on the subject's neutral shape: [F', 3] int64 (vertex indices of the model).

    The region is bounded by the subject's own landmarks: between the jaw ends (plus a margin), from below the chin
    to above the brows by ``region_forehead`` of the brow-to-chin height, and in front of the jaw ends."""
    with torch.no_grad():
        neutral_exp = torch.zeros(1, model.exp_dim, dtype=model.dtype, device=model.device)
        rest = model.canonical_vertices(identity, neutral_exp)[0]
        lmk = model.landmarks(identity, neutral_exp)[0]
    m = config.region_margin
    brow_y = lmk[list(_BROWS), 1].mean()
    chin_y = lmk[_CHIN, 1]
    inside = ((rest[:, 0] > lmk[_JAW_LEFT, 0] - m) & (rest[:, 0] < lmk[_JAW_RIGHT, 0] + m)
              & (rest[:, 1] > chin_y - m) & (rest[:, 1] < brow_y + config.region_forehead * (brow_y - chin_y))
              & (rest[:, 2] > min(float(lmk[_JAW_LEFT, 2]), float(lmk[_JAW_RIGHT, 2]))))
    faces = model.faces.to(rest.device)
    return faces[inside[faces].all(dim=1)]


def _crop_box(points_px: np.ndarray, margin: float) -> Tuple[float, float, float]:
    """Square (x0, y0, side) around projected points [N, 2] (continuous pixel coordinates)."""
    lo, hi = points_px.min(axis=0), points_px.max(axis=0)
    side = float(max(hi - lo)) * margin
    centre = (lo + hi) / 2.0
    return float(centre[0] - side / 2.0), float(centre[1] - side / 2.0), side


def face_view(image: np.ndarray, K: np.ndarray, box: Tuple[float, float, float],
              size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resample the square ``box`` = (x0, y0, side) (continuous pixels, may leave the image) of an RGB image
    [H, W, 3] uint8 to size x size, and the crop's intrinsics.

    Returns:
        image [size, size, 3] float32 in [0, 1] (0 outside the source), K [3, 3] float64.
    """
    x0, y0, side = box
    a = size / side
    src = image.astype(np.float32) / 255.0
    if a < 1.0:  # shrinking: low-pass first (bilinear sampling alone would alias)
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=0.5 / a)
    # Output pixel u's centre (u + 0.5) is continuous x0 + (u + 0.5) / a, i.e. source pixel index that minus 0.5.
    M = np.array([[1.0 / a, 0.0, x0 + 0.5 / a - 0.5], [0.0, 1.0 / a, y0 + 0.5 / a - 0.5]])
    out = cv2.warpAffine(src, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    A = np.array([[a, 0.0, -a * x0], [0.0, a, -a * y0], [0.0, 0.0, 1.0]])
    return out, A @ np.asarray(K, dtype=np.float64)


def prepare_views(model: FaceModel, identity: torch.Tensor, exp: np.ndarray, pose: np.ndarray, scale: float,
                  frames_images: Sequence[Tuple[int, Sequence[Optional[np.ndarray]]]], Ks: np.ndarray,
                  viewmats: np.ndarray, region: torch.Tensor, config: PhotometricConfig) -> List[FaceView]:
    """Face crops of every usable view.

    Args:
        frames_images: (frame index t, [C] RGB images [H, W, 3] uint8 or None) per frame to use.
        Ks, viewmats: [C, 3, 3] intrinsics of those images and [C, 4, 4] world-to-camera matrices.
        region: [F', 3] face-region triangles (``face_region_faces``).
    A view is used when the face is within ``max_view_deg`` of frontal to its camera and its face region projects
    in front of the camera.
    """
    region_vertices = torch.unique(region.reshape(-1))
    angles = view_angles_deg(pose, viewmats)  # [T, C]
    views: List[FaceView] = []
    for t, images in frames_images:
        with torch.no_grad():
            verts = model.posed_vertices(identity, torch.from_numpy(exp[t:t + 1]).to(model.device, model.dtype),
                                         torch.from_numpy(pose[t:t + 1]).to(model.device, model.dtype), scale)[0]
        points = verts[region_vertices].double().cpu().numpy()
        for c, image in enumerate(images):
            if image is None or angles[t, c] > config.max_view_deg:
                continue
            uv, depth = project_points(points, viewmats[c], Ks[c])
            if not (depth > 1e-6).all():
                continue
            box = _crop_box(uv, config.crop_margin)
            crop, K = face_view(image, Ks[c], box, config.crop_px)
            views.append(FaceView(t, c, torch.from_numpy(crop).permute(2, 0, 1).contiguous(),
                                  torch.from_numpy(K).float()))
    return views


@dataclasses.dataclass
class _Chunk:
    """Views rendered together, stacked once on the refinement's device."""

    frames: torch.Tensor  # [B] frame indices
    cams: torch.Tensor  # [B] camera indices
    images: torch.Tensor  # [B, 3, S, S]
    Ks: torch.Tensor  # [B, 3, 3]


def _chunks(views: List[FaceView], size: int, device) -> List[_Chunk]:
    """``views`` in chunks of at most ``size``."""
    out = []
    for s in range(0, len(views), size):
        part = views[s:s + size]
        out.append(_Chunk(torch.tensor([v.frame for v in part], device=device),
                          torch.tensor([v.camera for v in part], device=device),
                          torch.stack([v.image for v in part]).to(device), torch.stack([v.K for v in part]).to(device)))
    return out


class _Scene(torch.nn.Module):
    """The unknowns: per-frame pose and expression changes, albedo, lighting and per-camera colour corrections."""

    def __init__(self, frames: int, cameras: int, vertices: int, exp_dim: int, identity_dim: int, device):
        super().__init__()
        z = lambda *shape: torch.nn.Parameter(torch.zeros(*shape, device=device))  # noqa: E731
        self.d_rot, self.d_trans, self.d_exp = z(frames, 3), z(frames, 3), z(frames, exp_dim)
        self.d_id = z(identity_dim)
        self.albedo = z(vertices, 3)
        light = torch.zeros(9, 3, device=device)
        light[0] = 1.0  # uniform light: the initial albedo is the pixels' average colour
        self.light = torch.nn.Parameter(light)
        self.gain, self.bias = torch.nn.Parameter(torch.ones(cameras, 3, device=device)), z(cameras, 3)


def _posed(model: FaceModel, identity, exp0, pose0, scale: float, scene: _Scene, frames: torch.Tensor,
           refine_expression: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """World vertices and world vertex normals [B, V, 3] of ``frames`` [B] at the refined parameters."""
    exp = exp0[frames] + (scene.d_exp[frames] if refine_expression else 0.0)
    canon = model.canonical_vertices(identity + scene.d_id, exp)
    R = axis_angle_to_matrix(scene.d_rot[frames]) @ axis_angle_to_matrix(pose0[frames, :3])
    t = pose0[frames, 3:] + scale * scene.d_trans[frames]
    verts = torch.einsum("bij,bvj->bvi", R, scale * canon) + t[:, None]
    normals = torch.einsum("bij,bvj->bvi", R, vertex_normals(canon, model.faces))
    return verts, normals


def _render(model, identity, exp0, pose0, scale, scene: _Scene, chunk: _Chunk, region, viewmats,
            refine_expression: bool) -> Dict[str, torch.Tensor]:
    """Render a chunk of B views at the scene's current parameters.

    Returns:
        dict with ``colour`` [B, 3, S, S] (the prediction), ``mask`` [B, 1, S, S] (coverage), ``face_ids`` [B, S, S]
        and ``bary`` [B, 3, S, S] (the rasterizer's), ``multiplier`` [B, 3, S, S] and ``offset`` [B, 3, 1, 1]
        (colour = multiplier * albedo + offset: shading times the camera's gain, and its bias).
    """
    cams = chunk.cams
    verts, normals = _posed(model, identity, exp0, pose0, scale, scene, chunk.frames, refine_expression)
    attrs = torch.cat([scene.albedo.expand(len(cams), -1, -1), normals], dim=-1)
    S = chunk.images.shape[-1]
    out = rasterize_mesh(verts, region, attrs, viewmats[cams], chunk.Ks, S, S, soft=False)
    albedo, n = out["attrs"][:, :3], out["attrs"][:, 3:]
    n = n / n.norm(dim=1, keepdim=True).clamp(min=1e-6)
    shading = torch.einsum("bhwk,kc->bchw", sh_basis(n.permute(0, 2, 3, 1)), scene.light)
    multiplier = scene.gain[cams][:, :, None, None] * shading
    offset = scene.bias[cams][:, :, None, None]
    return {"colour": multiplier * albedo + offset, "mask": out["mask"], "face_ids": out["face_ids"],
            "bary": out["bary"], "multiplier": multiplier, "offset": offset}


def _charbonnier(diff: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt(diff * diff + eps * eps) - eps


def _back_projected_albedo(model, identity, exp0, pose0, scale, scene, chunks: List[_Chunk], region, viewmats,
                           refine_expression: bool) -> torch.Tensor:
    """The albedo that explains the images at the current poses, lighting and colour corrections: per vertex, the
    barycentric-weighted average over the pixels it is seen in of (pixel - offset) / multiplier; the current
    albedo where a vertex is unseen. [V, 3]."""
    V = scene.albedo.shape[0]
    total = torch.zeros(V, 3, device=scene.albedo.device)
    weight = torch.zeros(V, device=scene.albedo.device)
    with torch.no_grad():
        for chunk in chunks:
            out = _render(model, identity, exp0, pose0, scale, scene, chunk, region, viewmats, refine_expression)
            covered = out["face_ids"] >= 0  # [B, S, S]
            corners = region[out["face_ids"][covered]].reshape(-1)  # [N * 3]
            bary = out["bary"].permute(0, 2, 3, 1)[covered]  # [N, 3]
            observed = (chunk.images - out["offset"]) / out["multiplier"].clamp(min=0.05)
            observed = observed.permute(0, 2, 3, 1)[covered]  # [N, 3]
            weight.index_add_(0, corners, bary.reshape(-1))
            total.index_add_(0, corners, (bary[..., None] * observed[:, None]).reshape(-1, 3))
    seen = weight[:, None] > 1e-6
    return torch.where(seen, total / weight.clamp(min=1e-6)[:, None], scene.albedo.detach())


def pose_prior_weight(config: PhotometricConfig, cameras: int) -> float:
    """The weight of the poses' prior toward the landmark fit for views from ``cameras`` cameras (``prior_weight``,
    or its default: RIG_PRIOR_WEIGHT with several cameras, none with one)."""
    if config.prior_weight is not None:
        return float(config.prior_weight)
    return RIG_PRIOR_WEIGHT if cameras > 1 else 0.0


def _regulariser(scene: _Scene, identity: torch.Tensor, seen: torch.Tensor, prior_weight: float,
                 config: PhotometricConfig) -> torch.Tensor:
    """Prior of the refinement toward the landmark fit (frames with views ``seen`` [N], weight ``prior_weight``),
    temporal smoothness of the pose changes (frames in time order, as the landmark fit assumes) and, when refined,
    the identity's prior."""
    sigma = torch.tensor([math.radians(config.prior_rotation_deg)] * 3 + [config.prior_translation] * 3,
                         device=scene.d_rot.device)
    change = torch.cat([scene.d_rot, scene.d_trans], dim=1) / sigma  # [T, 6] in units of the prior's deviation
    frames = len(seen)
    reg = prior_weight * (change[seen] ** 2).sum() / frames
    if config.refine_expression:
        reg = reg + config.expression_prior_weight * ((scene.d_exp[seen] / config.prior_expression) ** 2).sum() / frames
    if config.refine_identity:
        reg = reg + config.identity_prior * ((identity + scene.d_id) ** 2).sum()
    T = change.shape[0]
    if T >= 3:
        reg = reg + config.smooth_weight * ((change[2:] - 2 * change[1:-1] + change[:-2]) ** 2).sum() / T
    return reg


def refine_photometric(model: FaceModel, identity, exp: np.ndarray, pose: np.ndarray, scale: float,
                       views: List[FaceView], viewmats: np.ndarray, region: torch.Tensor,
                       config: PhotometricConfig = PhotometricConfig(), device="cpu",
                       progress: bool = False) -> PhotometricResult:
    """Refine the landmark fit's poses (and optionally expressions) against face crops of the images.

    Args:
        model: the face model the landmark fit used (its own landmark definitions: no offsets are involved).
        identity: [K] the fitted identity code.
        exp: [T, 16], pose: [T, 6] (axis-angle + translation), scale: the landmark fit's parameters.
        views: ``prepare_views``' crops (at least one).
        viewmats: [C, 4, 4] world-to-camera matrices.
        region: [F', 3] face-region triangles.
    Returns:
        PhotometricResult. A frame without a view moves only with its neighbours (the smoothness term, which, as
        the landmark fit's, takes the frames to be in time order).
    """
    if not views:
        raise ValueError("refine_photometric: no view to compare against (no face within "
                         f"{config.max_view_deg} deg of frontal to any camera)")
    from tqdm import tqdm

    device = torch.device(device)
    model = model.to(device=device, dtype=torch.float32)
    identity = torch.as_tensor(identity, dtype=torch.float32, device=device)
    exp0 = torch.as_tensor(exp, dtype=torch.float32, device=device)
    pose0 = torch.as_tensor(pose, dtype=torch.float32, device=device)
    vm = torch.as_tensor(viewmats, dtype=torch.float32, device=device)
    region = region.to(device)
    T, C = pose.shape[0], viewmats.shape[0]
    scene = _Scene(T, C, model.num_vertices, model.exp_dim, model.num_identity, device)
    chunks = _chunks(views, config.views_per_chunk, device)
    scene.albedo.data.fill_(0.5)
    scene.albedo.data.copy_(_back_projected_albedo(model, identity, exp0, pose0, scale, scene, chunks, region, vm,
                                                   config.refine_expression))
    seen_frames = sorted({v.frame for v in views})
    cameras_used = sorted({v.camera for v in views})
    prior_weight = pose_prior_weight(config, len(cameras_used))
    groups = [
        {"params": [scene.albedo], "lr": config.lr_albedo},
        {"params": [scene.light], "lr": config.lr_light},
        {"params": [scene.gain, scene.bias], "lr": config.lr_colour},
        {"params": [scene.d_rot], "lr": math.radians(config.lr_rotation_deg)},
        {"params": [scene.d_trans], "lr": config.lr_translation},
        {"params": [scene.d_exp], "lr": config.lr_expression},
        {"params": [scene.d_id], "lr": config.lr_identity},
    ]
    optimiser = torch.optim.Adam(groups)
    frames_t = torch.tensor(seen_frames, device=device)
    steps = config.warmup + config.iterations
    losses: List[float] = []
    loss_start = float("nan")
    bar = tqdm(range(steps), desc="photometric", unit="it", disable=not progress)
    for it in bar:
        refining = it >= config.warmup
        since = it - config.warmup
        if config.albedo_refresh and since > 0 and since % config.albedo_refresh == 0:
            scene.albedo.data.copy_(_back_projected_albedo(model, identity, exp0, pose0, scale, scene, chunks, region,
                                                           vm, config.refine_expression))
        optimiser.zero_grad(set_to_none=True)
        total = 0.0
        for chunk in chunks:
            out = _render(model, identity, exp0, pose0, scale, scene, chunk, region, vm, config.refine_expression)
            colour, covered = out["colour"], out["mask"]
            per_view = (_charbonnier(colour - chunk.images, config.charbonnier) * covered).sum((1, 2, 3)) / (
                3.0 * covered.sum((1, 2, 3)).clamp(min=1.0))
            loss = per_view.sum() / len(views)
            loss.backward()
            total += float(loss.detach())
        _regulariser(scene, identity, frames_t, prior_weight, config).backward()
        # The reference camera's colour correction stays the identity (the albedo carries the colour).
        ref = cameras_used[0]
        scene.gain.grad[ref] = 0.0
        scene.bias.grad[ref] = 0.0
        if not refining:  # Adam would otherwise gather the poses' moments in the warm-up and lurch at its end
            for p in (scene.d_rot, scene.d_trans, scene.d_exp, scene.d_id):
                p.grad = None
        if not config.refine_identity:
            scene.d_id.grad = None
        if refining and config.albedo_refresh:
            scene.albedo.grad = None
        if not config.refine_expression:
            scene.d_exp.grad = None
        optimiser.step()
        losses.append(total)
        if it == config.warmup:
            loss_start = total
        bar.set_postfix(loss=f"{total:.4f}")
    bar.close()

    with torch.no_grad():
        R0 = axis_angle_to_matrix(pose0[:, :3])
        R = axis_angle_to_matrix(scene.d_rot) @ R0
        refined_pose = torch.cat([matrix_to_axis_angle(R), pose0[:, 3:] + scale * scene.d_trans], dim=1)
        refined_exp = exp0 + (scene.d_exp if config.refine_expression else 0.0)
        refined_identity = identity + scene.d_id
        change_deg = torch.rad2deg(scene.d_rot.norm(dim=1))
    return PhotometricResult(
        pose=refined_pose.double().cpu().numpy(),
        exp=refined_exp.double().cpu().numpy(),
        identity=refined_identity.double().cpu().numpy(),
        views=len(views),
        loss={"start": losses[-1] if math.isnan(loss_start) else loss_start, "end": losses[-1]},
        rotation_change_deg=change_deg.double().cpu().numpy(),
        iterations=steps,
        prior_weight=prior_weight,
    )

"""EWA projection of 3D Gaussians to the image plane, reproducing gsplat 1.5.3's arithmetic in PyTorch.

This is the single place where the pure-PyTorch rasterizer (``cgha.render.gaussians``, ``backend="torch"``)
projects Gaussians; it mirrors gsplat's fused projection kernel
(``gsplat/cuda/csrc/ProjectionEWA3DGSFused.cu`` with ``persp_proj``, ``add_blur`` and
``quat_scale_to_covar_preci`` from ``gsplat/cuda/include/Utils.cuh``):

1. camera-space mean ``t = R m + T`` and covariance ``R (Rq S)(Rq S)^T R^T`` (``Rq`` from the wxyz quaternion,
   normalised; ``S = diag(scales)``);
2. culled (radii 0) when ``z < near_plane`` or ``z > far_plane``;
3. EWA Jacobian ``J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]`` where ``tx/z`` is ``x/z`` clamped to
   ``[-(cx/fx + 0.3 tan_x), (W - cx)/fx + 0.3 tan_x]`` with ``tan_x = W / (2 fx)`` (and likewise for y): for a
   centred principal point this is 3DGS's ``1.3 tan(half fov)`` limit. Only ``J`` uses the clamped value; the
   projected mean ``(fx x/z + cx, fy y/z + cy)`` does not;
4. ``cov2d = J cov_c J^T + eps2d I`` (the 0.3 px^2 low-pass); culled when ``det(cov2d) <= 0``;
5. opacity-aware extent: culled when ``opacity < 1/255``, else ``extend = min(3.33, sqrt(2 ln(255 opacity)))``
   and per-axis radii ``ceil(extend * sqrt(cov2d_xx))``, ``ceil(extend * sqrt(cov2d_yy))`` (pixels). Inside that
   box lie exactly the pixels where ``opacity * exp(-sigma) >= 1/255``;
6. culled when both radii are 0 (``radius_clip = 0``) or the box lies outside ``[0, W] x [0, H]``.

Everything is differentiable by autograd except the radii and the culling decisions, which are piecewise
constant. Culled Gaussians get zero outputs and zero gradients (their intermediate values are computed from safe
stand-ins so no NaN/inf can leak into the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cgha.utils.rotations import quaternion_to_matrix

__all__ = [
    "ALPHA_THRESHOLD",
    "EPS2D",
    "FAR_PLANE",
    "MAX_EXTEND",
    "ProjectedGaussians",
    "project_gaussians",
]

# gsplat 1.5.3 constants (see the module docstring of cgha.render.gaussians for the full list).
EPS2D = 0.3  # px^2 added to the diagonal of the 2D covariance (gsplat `eps2d` default, add_blur()).
ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat Common.h ALPHA_THRESHOLD.
MAX_EXTEND = 3.33  # gsplat's cap on the box half-size in standard deviations (never binding for opacity <= 1).
FAR_PLANE = 1e10  # gsplat `far_plane` default.
# Relative margin of the Jacobian clamp beyond the image border (gsplat persp_proj(): 0.3 * tan_fov).
_FOV_MARGIN = 0.3


@dataclass
class ProjectedGaussians:
    """Per-Gaussian screen-space quantities for one camera per batch element.

    Attributes:
        means2d: ``[B, N, 2]`` projected centres in pixels (x right, y down); 0 where culled.
        conics: ``[B, N, 3]`` upper triangle ``(a, b, c)`` of the inverse 2D covariance, so the Mahalanobis term
            is ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``; 0 where culled.
        depths: ``[B, N]`` camera-space z of the centres; 0 where culled.
        radii: ``[B, N, 2]`` int32 per-axis box half-sizes in pixels, ``(0, 0)`` where culled (no gradient).
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor


def project_gaussians(
    means: torch.Tensor,  # [B, N, 3]
    quats: torch.Tensor,  # [B, N, 4]
    scales: torch.Tensor,  # [B, N, 3]
    opacities: torch.Tensor,  # [B, N]
    viewmats: torch.Tensor,  # [B, 4, 4]
    Ks: torch.Tensor,  # [B, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    eps2d: float = EPS2D,
    far_plane: float = FAR_PLANE,
) -> ProjectedGaussians:
    """Project 3D Gaussians with gsplat's EWA arithmetic (see the module docstring).

    Args:
        means: ``[B, N, 3]`` world-space centres.
        quats: ``[B, N, 4]`` wxyz rotations (normalised inside).
        scales: ``[B, N, 3]`` standard deviations along the local axes.
        opacities: ``[B, N]`` in ``[0, 1]``, used only for the opacity-aware extent and culling.
        viewmats: ``[B, 4, 4]`` world-to-camera, OpenCV axes.
        Ks: ``[B, 3, 3]`` pinhole intrinsics in pixels.
        width, height: image size in pixels.
        near_plane, eps2d, far_plane: as in gsplat's ``fully_fused_projection``.
    Returns:
        :class:`ProjectedGaussians` with ``[B, N, ...]`` tensors in the dtype of ``means``.
    """
    dtype = means.dtype
    R = viewmats[:, None, :3, :3]  # [B, 1, 3, 3]
    T = viewmats[:, None, :3, 3]  # [B, 1, 3]
    mean_c = (R @ means[..., None]).squeeze(-1) + T  # [B, N, 3]
    x, y, z = mean_c.unbind(-1)

    rot = quaternion_to_matrix(quats)  # [B, N, 3, 3]
    M = R @ (rot * scales[..., None, :])  # camera-space R Rq S: [B, N, 3, 3]
    cov_c = M @ M.transpose(-1, -2)  # [B, N, 3, 3]

    fx = Ks[:, 0, 0, None]  # [B, 1]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]

    in_depth = (z >= near_plane) & (z <= far_plane)
    # Culled Gaussians compute with z = 1 so that 1/z and its gradient stay finite; they are masked below.
    zs = torch.where(in_depth, z, torch.ones_like(z))
    rz = 1.0 / zs
    tan_x = 0.5 * width / fx
    tan_y = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + _FOV_MARGIN * tan_x
    lim_x_neg = cx / fx + _FOV_MARGIN * tan_x
    lim_y_pos = (height - cy) / fy + _FOV_MARGIN * tan_y
    lim_y_neg = cy / fy + _FOV_MARGIN * tan_y
    # torch.clamp passes the gradient where the value is inside the closed interval, as gsplat's
    # persp_proj_vjp does; outside, tx = z * limit and the gradient goes to z only.
    tx = zs * torch.clamp(x * rz, min=-lim_x_neg, max=lim_x_pos)
    ty = zs * torch.clamp(y * rz, min=-lim_y_neg, max=lim_y_pos)

    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(zs.shape + (2, 3))  # [B, N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [B, N, 2, 2]
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [B, N, 2]

    det = a * c - b * b
    good_det = det > 0
    det_s = torch.where(good_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)  # [B, N, 3]

    with torch.no_grad():
        opac = opacities.detach()
        good_opac = opac >= ALPHA_THRESHOLD
        ratio = torch.where(good_opac, opac / ALPHA_THRESHOLD, torch.ones_like(opac))
        extend = torch.sqrt(2.0 * torch.log(ratio)).clamp_max(MAX_EXTEND)
        a_d = torch.where(good_det, a.detach(), torch.zeros_like(a)).clamp_min(0)
        c_d = torch.where(good_det, c.detach(), torch.zeros_like(c)).clamp_min(0)
        rad_x = torch.ceil(extend * torch.sqrt(a_d))
        rad_y = torch.ceil(extend * torch.sqrt(c_d))
        mx, my = mean2d.detach().unbind(-1)
        on_image = ~(
            (mx + rad_x <= 0) | (mx - rad_x >= width) | (my + rad_y <= 0) | (my - rad_y >= height)
        )
        visible = in_depth & good_det & good_opac & ((rad_x > 0) | (rad_y > 0)) & on_image
        # A non-finite mean2d (possible only for degenerate intrinsics) must not be drawn either.
        visible &= torch.isfinite(mean2d.detach()).all(-1)
        radii = torch.stack([rad_x, rad_y], dim=-1)
        radii = torch.where(visible[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    vis3 = visible[..., None]
    zero_t = torch.zeros((), dtype=dtype, device=means.device)
    return ProjectedGaussians(
        means2d=torch.where(vis3, mean2d, zero_t),
        conics=torch.where(vis3, conics, zero_t),
        depths=torch.where(visible, z, zero_t),
        radii=radii,
    )


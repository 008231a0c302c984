"""Where the facial features of an identity sit in canonical head space.

One layout is shared by the shape (geometry), the expressions, the texture and the landmarks so that, e.g., the
painted iris sits on the eyeball bump and the mouth-interior texture fills the band that opens with the jaw.
All lengths are in canonical units (head radius about 1, face toward +z, y up, +x = subject's left).
"""
from __future__ import annotations

import dataclasses

from .identity import IdentityParams

__all__ = ["FaceLayout", "face_layout"]


@dataclasses.dataclass(frozen=True)
class FaceLayout:
    eye_x: float  # |x| of the eye centres
    eye_y: float
    eye_half_width: float  # corner-to-centre of the eye opening
    lid_upper: float  # height of the open upper lid above eye_y (at the eye centre)
    lid_lower: float  # depth of the lower lid below eye_y
    iris_r: float
    pupil_r: float
    brow_y: float
    brow_inner_x: float
    brow_outer_x: float
    nose_top_y: float
    nose_tip_y: float
    nose_base_y: float
    nose_half_width: float
    mouth_y: float  # the line where the lips meet
    mouth_half_width: float  # corner-to-centre
    band_half_height: float  # half height of the mouth-interior band at the centre, in texture coordinates
    band_rest_half_height: float  # ... and in rest geometry (the band is squeezed shut at rest)
    warp_reach: float  # |y - mouth_y| beyond which the rest squeeze leaves the mesh alone
    chin_y: float
    jaw_hinge: tuple[float, float, float]
    ear_x: float
    ear_y: float
    ear_z: float


def face_layout(idp: IdentityParams) -> FaceLayout:
    """Feature positions of identity ``idp``."""
    w, h = idp.head_width, idp.head_height
    return FaceLayout(
        eye_x=0.335 * idp.eye_spacing * w,
        eye_y=0.0,
        eye_half_width=0.15 * idp.eye_size,
        lid_upper=0.066 * idp.eye_size,
        lid_lower=0.046 * idp.eye_size,
        iris_r=0.062 * idp.eye_size,
        pupil_r=0.026 * idp.eye_size,
        brow_y=0.19 + 0.01 * idp.brow_ridge,
        brow_inner_x=0.09 * w,
        brow_outer_x=0.53 * w,
        nose_top_y=0.08,
        nose_tip_y=-0.26 * idp.nose_length,
        nose_base_y=-0.34 - 0.05 * (idp.nose_length - 1.0),
        nose_half_width=0.145 * idp.nose_width,
        mouth_y=-0.585 * h * (0.5 + 0.5 * idp.chin_length),
        mouth_half_width=0.25 * idp.mouth_width,
        band_half_height=0.075,
        band_rest_half_height=0.004,
        warp_reach=0.2,
        chin_y=-1.0 * h * idp.chin_length,
        jaw_hinge=(0.0, -0.12, -0.22),
        ear_x=0.84 * w,
        ear_y=-0.04,
        ear_z=-0.14,
    )

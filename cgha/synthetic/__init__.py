"""The embedded default subject: a deterministic parametric synthetic head and its data writer.

    from cgha.synthetic import generate_subject
    root = generate_subject("data/synthetic_id0", identity=0, frames=40, cameras=16, resolution=512, seed=0)
    root = generate_monocular_subject("data/synthetic_mono0", identity=0, frames=300, resolution=512, seed=0)

Modules: ``topology`` (template mesh), ``identity`` / ``layout`` (per-person parameters and feature positions),
``shape`` (rest shape), ``expression`` (expression space), ``landmarks`` (iBUG-68), ``head_model`` (all of it
behind one class), ``noise`` / ``texture`` (procedural albedo), ``background``, ``render`` (shading and
compositing over ``cgha.render.mesh``), ``capture`` (camera rig), ``trajectory`` (expression and pose curves),
``writer`` (dataset layout, meta.json, preview.jpg), ``raw_capture`` (NeRSemble-style raw videos for
the preprocessing tests), ``mathutil`` (smoothstep, denormal-free Gaussians).
"""
from .capture import CameraRig, camera_ids, camera_rig, frontal_camera, monocular_cameras
from .expression import EXP_DIM, EXPRESSION_NAMES
from .head_model import DEFAULT_SCALE, HeadModel, apply_pose
from .identity import IdentityParams, identity_params
from .raw_capture import generate_raw_capture
from .render import render_views
from .texture import HeadTexture
from .trajectory import (MONOCULAR_POSE_LIMITS_DEG, expression_trajectory, matrix_to_euler, monocular_pose_trajectory,
                         pose_trajectory, talking_expression_trajectory)
from .writer import (GENERATOR, GENERATOR_VERSION, MONOCULAR_PRESET, SubjectArgumentError, generate_monocular_subject,
                     generate_subject, recommended_splits)

__all__ = [
    "CameraRig", "camera_ids", "camera_rig", "frontal_camera", "monocular_cameras",
    "EXP_DIM", "EXPRESSION_NAMES",
    "DEFAULT_SCALE", "HeadModel", "apply_pose",
    "IdentityParams", "identity_params",
    "render_views", "HeadTexture",
    "expression_trajectory", "pose_trajectory", "matrix_to_euler",
    "MONOCULAR_POSE_LIMITS_DEG", "talking_expression_trajectory", "monocular_pose_trajectory",
    "GENERATOR", "GENERATOR_VERSION", "MONOCULAR_PRESET", "SubjectArgumentError", "generate_subject",
    "generate_monocular_subject", "recommended_splits",
    "generate_raw_capture",
]

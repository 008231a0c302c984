"""A license-free parametric face model built from the synthetic head: a continuous identity space, the synthetic
expression space and iBUG-68 landmarks, on the synthetic head's fixed topology.

    model = FaceModel(device="cpu")
    verts = model.posed_vertices(identity, exp, pose, scale)   # [B, V, 3] world
    lmk = model.landmarks(identity, exp, pose, scale)            # [B, 68, 3] world

Identity: a PCA over the rest shapes of ``DEFAULT_NUM_SAMPLES`` generator identities (indices from
``SAMPLE_IDENTITY_START`` on, so the identities people use, 0..999, stay held out). Each sample contributes its
16002 rest vertices *and* its 68 landmark positions (open-eye and closed-lid points), so the landmarks move with
the identity as the generator places them (on the mouth line, the eye corners, ...) instead of sticking to the
vertices that carry them on one person. Components are scaled by their standard deviation over the samples: an
identity code of unit Gaussian coefficients is a plausible generator identity.

Expression: the generator's 16 named coefficients (``EXPRESSION_MODEL``), deformed with identity 0's expression
basis (its blendshapes, jaw hinge rotation and mouth push) exactly as ``HeadModel.canonical_vertices`` does; identity
0 is the generator's hand-tuned average person, about as far from the PCA mean as the PCA residual of a held-out
identity. A subject tracked with this model therefore shares the synthetic identities' expression space.

Building takes about a minute on two cores (the generator's rest shapes), so the arrays are cached as an .npz under
``$CGHA_CACHE_DIR`` or ``~/.cache/cgha``, keyed by the model name, the build settings and a hash of the synthetic
head's geometry sources (a change there rebuilds the model instead of loading stale arrays). A cache file that is
damaged, of another build or inconsistent is never used: it is rebuilt and replaced (with a warning). Tests and
experiments can build a small model quickly (``num_samples``, ``num_components``, ``cache_dir``).
"""
from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import multiprocessing
import os
import warnings
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from cgha.synthetic.expression import (EXP_DIM, EXPRESSION_MODEL, EXPRESSION_NAMES, ExpressionBasis, expression_batch,
                                      named_expression)
from cgha.synthetic.head_model import apply_pose
from cgha.synthetic.landmarks import NUM_LANDMARKS
from cgha.utils.atomic import atomic_output

__all__ = [
    "FACE_MODEL_NAME", "DEFAULT_NUM_SAMPLES", "DEFAULT_NUM_COMPONENTS", "SAMPLE_IDENTITY_START", "FaceModel",
    "face_model_arrays", "face_model_path", "build_face_model_arrays", "identity_rest_geometry",
]

FACE_MODEL_NAME = "cgha-face-v1"
# Bump when the build changes (sampling, weighting, array layout): part of the cache key.
_BUILD_VERSION = 1
DEFAULT_NUM_SAMPLES = 128
DEFAULT_NUM_COMPONENTS = 24
# Generator identities 0..999 are the ones subjects are made of; the PCA samples start above them, so every
# identity a test or benchmark renders is held out from the model.
SAMPLE_IDENTITY_START = 1000
# Sources whose numbers define the rest shapes, landmarks and expression basis the model is built from.
_GEOMETRY_SOURCES = ("identity.py", "layout.py", "shape.py", "topology.py", "expression.py", "landmarks.py",
                     "head_model.py")
_ARRAY_KEYS = ("faces", "mean", "components", "lmk_mean", "lmk_components", "sigma", "blend", "jaw_weight",
               "mouth_push", "hinge", "lmk_anchor", "blink_coeff", "sample_ids", "key")


def identity_rest_geometry(identity: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rest geometry of one generator identity, as the PCA samples it (float64, canonical space).

    Returns:
        rest: [V, 3] neutral vertices.
        landmarks: [2, 68, 3] rest landmark positions with open eyes (row 0) and closed lids (row 1).
    """
    from cgha.synthetic import head_model as hm

    _, _, _, rest, _, _, spec = hm._build(int(identity))
    return rest.numpy(), np.stack([rest[spec.open_idx].numpy(), rest[spec.closed_idx].numpy()])


def _sample_worker(identity: int) -> Tuple[np.ndarray, np.ndarray]:
    """``identity_rest_geometry`` in a worker process of the build's pool."""
    # One thread per worker: the rest-shape tracer is many small ops, which threads slow down rather than speed up.
    torch.set_num_threads(1)
    return identity_rest_geometry(identity)


def _sample_geometry(ids: list, workers: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rest vertices [N, V, 3] and landmarks [N, 2, 68, 3] of generator identities ``ids`` (in order)."""
    if workers <= 1:
        # One intra-op thread, as in the pool's workers: the rest-shape tracer is many small ops, which threads
        # slow down (about 2x on two cores, far more on a busy machine). The caller's setting is restored.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = [identity_rest_geometry(i) for i in ids]
        finally:
            torch.set_num_threads(threads)
    else:
        # spawn, not fork: forking a process whose OpenMP pool is already running can deadlock.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            out = list(pool.map(_sample_worker, ids, chunksize=4))
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def _default_workers(num_samples: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    # A spawned worker pays about two seconds to import torch: only worth it for more than a few samples each.
    return max(1, min(cpus, 8, num_samples // 8))


def _source_hash() -> str:
    import cgha.synthetic as synthetic

    root = Path(synthetic.__file__).parent
    h = hashlib.sha256()
    for name in _GEOMETRY_SOURCES:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()[:16]


def _cache_key(num_samples: int, num_components: int) -> str:
    return (f"{FACE_MODEL_NAME}-b{_BUILD_VERSION}-n{num_samples}-k{num_components}-s{SAMPLE_IDENTITY_START}-"
            f"{_source_hash()}")


def build_face_model_arrays(num_samples: int = DEFAULT_NUM_SAMPLES, num_components: int = DEFAULT_NUM_COMPONENTS,
                            workers: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Build the model's arrays (no cache). Deterministic: fixed sample identities, float64 SVD, fixed signs.

    Args:
        num_samples: generator identities sampled (``SAMPLE_IDENTITY_START`` onward).
        num_components: K, the identity dimension (< num_samples).
        workers: processes building rest shapes (default: the CPUs this process may use, at most 8; one for
            small builds, where starting processes costs more than it saves).
    Returns:
        dict of numpy arrays: ``faces`` [F, 3] int64, ``mean`` [V, 3], ``components`` [K, V, 3], ``lmk_mean``
        [2, 68, 3], ``lmk_components`` [K, 2, 68, 3], ``sigma`` [K] (component standard deviations),
        ``blend`` [D, V, 3], ``jaw_weight`` [V], ``mouth_push`` [V], ``hinge`` [3] (identity 0's expression
        basis), ``lmk_anchor`` [2, 68] (identity 0's landmark vertices, open / closed), ``blink_coeff`` [68],
        ``sample_ids`` [N], ``key`` (the cache key string).
    """
    if not 1 <= num_components < num_samples:
        raise ValueError(f"num_components must be in [1, num_samples), got {num_components} with "
                         f"num_samples={num_samples}")
    from cgha.synthetic import head_model as hm

    workers = _default_workers(num_samples) if workers is None else int(workers)
    ids = list(range(SAMPLE_IDENTITY_START, SAMPLE_IDENTITY_START + num_samples))
    rest, lmk = _sample_geometry(ids, workers)
    n, v = rest.shape[0], rest.shape[1]
    X = np.concatenate([rest.reshape(n, -1), lmk.reshape(n, -1)], axis=1)
    mean = X.mean(axis=0)
    _, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
    sigma = S[:num_components] / np.sqrt(n - 1)
    comps = Vt[:num_components] * sigma[:, None]
    # SVD signs are arbitrary: make each component's largest entry positive so rebuilds agree.
    flip = np.sign(comps[np.arange(num_components), np.abs(comps).argmax(axis=1)])
    comps *= flip[:, None]

    _, _, faces, _, _, basis, spec = hm._build(0)
    f32 = np.float32
    return {
        "faces": faces.numpy().astype(np.int64),
        "mean": mean[: v * 3].reshape(v, 3).astype(f32),
        "components": comps[:, : v * 3].reshape(num_components, v, 3).astype(f32),
        "lmk_mean": mean[v * 3:].reshape(2, NUM_LANDMARKS, 3).astype(f32),
        "lmk_components": comps[:, v * 3:].reshape(num_components, 2, NUM_LANDMARKS, 3).astype(f32),
        "sigma": sigma.astype(f32),
        "blend": basis.blend.numpy().astype(f32),
        "jaw_weight": basis.jaw_weight.numpy().astype(f32),
        "mouth_push": basis.mouth_push.numpy().astype(f32),
        "hinge": basis.hinge.numpy().astype(f32),
        "lmk_anchor": np.stack([spec.open_idx.numpy(), spec.closed_idx.numpy()]).astype(np.int64),
        "blink_coeff": spec.blink_coeff.numpy().astype(np.int64),
        "sample_ids": np.asarray(ids, dtype=np.int64),
        "key": np.asarray(_cache_key(num_samples, num_components)),
    }


def _invalid_reason(arrays: Dict[str, np.ndarray], key: str, num_samples: int, num_components: int) -> Optional[str]:
    """Why arrays read from a cache file cannot be used (None: complete, of this build, consistently shaped)."""
    missing = [k for k in _ARRAY_KEYS if k not in arrays]
    if missing:
        return f"arrays missing: {', '.join(missing)}"
    if str(arrays["key"]) != key:
        return f"built as {str(arrays['key'])!r}, expected {key!r}"
    v = arrays["mean"].shape[0] if arrays["mean"].ndim == 2 else -1
    shapes = {"mean": (v, 3), "components": (num_components, v, 3), "lmk_mean": (2, NUM_LANDMARKS, 3),
              "lmk_components": (num_components, 2, NUM_LANDMARKS, 3), "sigma": (num_components,),
              "blend": (EXP_DIM, v, 3), "jaw_weight": (v,), "mouth_push": (v,), "hinge": (3,),
              "lmk_anchor": (2, NUM_LANDMARKS), "blink_coeff": (NUM_LANDMARKS,), "sample_ids": (num_samples,)}
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            return f"{k} has shape {arrays[k].shape}, expected {shape}"
    faces = arrays["faces"]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.size == 0 or faces.min() < 0 or faces.max() >= v:
        return "faces are not [F, 3] vertex indices"
    if arrays["lmk_anchor"].min() < 0 or arrays["lmk_anchor"].max() >= v:
        return "lmk_anchor is not vertex indices"
    for k in shapes:
        if not np.issubdtype(arrays[k].dtype, np.number) or not np.isfinite(arrays[k]).all():
            return f"{k} is not finite numbers"
    return None


def _cache_dir() -> Path:
    return Path(os.environ.get("CGHA_CACHE_DIR") or Path.home() / ".cache" / "cgha")


def face_model_path(num_samples: int = DEFAULT_NUM_SAMPLES, num_components: int = DEFAULT_NUM_COMPONENTS,
                    cache_dir: Optional[os.PathLike] = None) -> Path:
    """Where ``face_model_arrays`` caches the model of these settings: ``{cache_dir}/{key}.npz``."""
    root = Path(cache_dir) if cache_dir is not None else _cache_dir()
    return root / f"{_cache_key(num_samples, num_components)}.npz"


def face_model_arrays(num_samples: int = DEFAULT_NUM_SAMPLES, num_components: int = DEFAULT_NUM_COMPONENTS,
                      cache_dir: Optional[os.PathLike] = None) -> Dict[str, np.ndarray]:
    """``build_face_model_arrays`` through an on-disk cache (``face_model_path``; the cache folder is ``cache_dir``,
    else ``$CGHA_CACHE_DIR``, else ``~/.cache/cgha``).

    A file that cannot be read, is of another build or fails the consistency checks (shapes, index ranges, finite
    values; a damaged .npz also fails its zip CRC check) is never used: a warning names it and the model is rebuilt
    and written over it atomically (temporary file + rename), so concurrent builders never see a partial file. A
    cache folder that cannot be written only costs the rebuild next time (warning)."""
    key = _cache_key(num_samples, num_components)
    path = face_model_path(num_samples, num_components, cache_dir)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            reason = _invalid_reason(arrays, key, num_samples, num_components)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            reason = f"unreadable ({type(error).__name__}: {error})"
        if reason is None:
            return arrays
        warnings.warn(f"face model cache {path} is invalid ({reason}); rebuilding it", RuntimeWarning,
                      stacklevel=2)
    arrays = build_face_model_arrays(num_samples, num_components)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as error:
        warnings.warn(f"cannot write the face model cache {path} ({error}); the model is rebuilt next time",
                      RuntimeWarning, stacklevel=2)
    return arrays


class FaceModel:
    """The parametric face model.

    Attributes:
        name: model id, recorded in tracked subjects (``FACE_MODEL_NAME``).
        expression_model: id of the expression space (the synthetic generator's ``EXPRESSION_MODEL``).
        expression_names: the D = 16 coefficient names.
        key: the build's cache key (model name, build settings, hash of the generator's geometry sources).
        num_identity: K, the identity dimension.
        faces: [F, 3] int64, counter-clockwise seen from outside (the synthetic head's topology).
        mean: [V, 3] mean rest vertices (canonical).
        components: [K, V, 3] identity components (one standard deviation each).
        sigma: [K] standard deviation of each component over the samples (canonical units).
    """

    name = FACE_MODEL_NAME
    expression_model = EXPRESSION_MODEL
    expression_names = EXPRESSION_NAMES

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 num_samples: int = DEFAULT_NUM_SAMPLES, num_components: int = DEFAULT_NUM_COMPONENTS,
                 cache_dir: Optional[os.PathLike] = None, arrays: Optional[Dict[str, np.ndarray]] = None):
        """Load (or build and cache) the model of ``num_samples`` / ``num_components`` onto ``device``; with
        ``arrays`` (``build_face_model_arrays``' output) use those instead of the cache."""
        a = face_model_arrays(num_samples, num_components, cache_dir) if arrays is None else arrays
        self._arrays = a
        self.key = str(a["key"])
        self.device = torch.empty(0, device=device).device  # normalised: "cuda" -> "cuda:0"
        self.dtype = dtype

        def t(x):
            return torch.from_numpy(np.ascontiguousarray(x)).to(dtype=dtype, device=self.device)

        self.faces = torch.from_numpy(a["faces"]).to(self.device)
        self.mean = t(a["mean"])
        self.components = t(a["components"])
        self.sigma = t(a["sigma"])
        self._comp_flat = self.components.reshape(self.num_identity, -1)
        self._lmk_mean = t(a["lmk_mean"]).reshape(-1, 3)  # [136, 3]: 68 open-eye points, then 68 closed-lid
        self._lmk_comp = t(a["lmk_components"]).reshape(self.num_identity, -1)  # [K, 136 * 3]
        blend, jaw, push = t(a["blend"]), t(a["jaw_weight"]), t(a["mouth_push"])
        self._basis = ExpressionBasis(blend, jaw, push, t(a["hinge"]))
        # Landmark points deform like the vertex that carries them on identity 0.
        anchor = torch.from_numpy(a["lmk_anchor"].reshape(-1)).to(self.device)
        self._lmk_basis = ExpressionBasis(blend[:, anchor], jaw[anchor], push[anchor], t(a["hinge"]))
        self.blink_coeff = torch.from_numpy(a["blink_coeff"]).to(self.device)  # [68], -1 = not blinking
        self.sample_ids = tuple(int(i) for i in a["sample_ids"])
        self.landmark_offset: Optional[torch.Tensor] = None  # [68, 3] (with_landmark_offset)

    def to(self, device: torch.device | str | None = None, dtype: Optional[torch.dtype] = None) -> "FaceModel":
        """This model on another device / dtype (``self`` when nothing changes); the arrays are not reloaded."""
        device = self.device if device is None else torch.empty(0, device=device).device
        dtype = self.dtype if dtype is None else dtype
        if device == self.device and dtype == self.dtype:
            return self
        return FaceModel(device=device, dtype=dtype, arrays=self._arrays).with_landmark_offset(self.landmark_offset)

    def with_landmark_offset(self, offset) -> "FaceModel":
        """This model with every landmark moved by ``offset`` [68, 3] (None: the model's own landmarks).

        The offset is in canonical units and is added to the *neutral* landmark positions, so it deforms with the
        expression as the landmark does (a chin point's offset turns with the opening jaw) and is posed with the
        head. It maps the model's landmark definitions onto another landmarker's (``cgha.tracking.calibration``);
        vertices are not moved. The arrays are shared, not copied.
        """
        model = copy.copy(self)
        if offset is None:
            model.landmark_offset = None
            return model
        offset = torch.as_tensor(offset).to(dtype=self.dtype, device=self.device)
        if offset.shape != (NUM_LANDMARKS, 3) or not bool(torch.isfinite(offset).all()):
            raise ValueError(f"landmark offset must be finite [{NUM_LANDMARKS}, 3], got {tuple(offset.shape)}")
        model.landmark_offset = offset
        return model

    def meta(self) -> dict:
        """What a tracked subject or an avatar records about the model (JSON-serialisable)."""
        return {"face_model": self.name, "face_model_key": self.key, "expression_model": self.expression_model,
                "expression_names": list(self.expression_names), "identity_dim": self.num_identity}

    def expression(self, **coeffs: float) -> torch.Tensor:
        """A [16] coefficient vector from names, e.g. ``model.expression(jaw_open=1.0, blink_left=0.5)``."""
        return named_expression(coeffs, self.dtype, self.device)

    @property
    def num_identity(self) -> int:
        return int(self.components.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def exp_dim(self) -> int:
        return EXP_DIM

    # -- argument checks -------------------------------------------------------------------------------------

    def _exp(self, exp) -> torch.Tensor:
        return expression_batch(exp, self.dtype, self.device)

    def _identity(self, identity, batch: int) -> torch.Tensor:
        """[K] (shared) or [B, K] identity codes; None is the mean."""
        if identity is None:
            return torch.zeros(self.num_identity, dtype=self.dtype, device=self.device)
        identity = torch.as_tensor(identity, dtype=self.dtype, device=self.device)
        K = self.num_identity
        if identity.shape == (1, K):
            identity = identity[0]
        if identity.shape != (K,) and identity.shape != (batch, K):
            raise ValueError(f"identity must be [{K}] or [B={batch}, {K}], got {tuple(identity.shape)}")
        return identity

    def _pose(self, pose, scale, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        pose = torch.as_tensor(pose, dtype=self.dtype, device=self.device)
        if pose.dim() == 1:
            pose = pose[None]
        if pose.shape != (batch, 6) and pose.shape != (1, 6):
            raise ValueError(f"pose must be [B={batch}, 6] (or [6]), got {tuple(pose.shape)}")
        scale = torch.as_tensor(scale, dtype=self.dtype, device=self.device).reshape(-1)
        if scale.numel() not in (1, batch):
            raise ValueError(f"scale must be a scalar or [B={batch}], got {scale.numel()} values")
        return pose.expand(batch, 6), scale.expand(batch)

    # -- geometry --------------------------------------------------------------------------------------------

    def rest_vertices(self, identity=None) -> torch.Tensor:
        """Neutral canonical vertices: [V, 3] for ``identity`` [K] (None = mean), [B, V, 3] for [B, K]."""
        if identity is None:
            return self.mean.clone()
        identity = torch.as_tensor(identity, dtype=self.dtype, device=self.device)
        if identity.dim() not in (1, 2) or identity.shape[-1] != self.num_identity:
            raise ValueError(f"identity must be [{self.num_identity}] or [B, {self.num_identity}], "
                             f"got {tuple(identity.shape)}")
        return self.mean + (identity @ self._comp_flat).reshape(identity.shape[:-1] + self.mean.shape)

    def canonical_vertices(self, identity, exp) -> torch.Tensor:
        """Expressed canonical vertices.

        Args:
            identity: [K] shared by the batch, or [B, K]; None = the mean identity.
            exp: [B, 16] (or [16]) expression coefficients (0 = neutral, meant to lie in [0, 1]).
        Returns:
            [B, V, 3].
        """
        exp = self._exp(exp)
        identity = self._identity(identity, exp.shape[0])
        if identity.dim() == 1:
            return self._basis.deform(self.rest_vertices(identity), exp)
        # The basis deforms one rest shape per call; per-sample identities are rare (evaluation), so loop.
        return torch.cat([self._basis.deform(self.rest_vertices(identity[b]), exp[b: b + 1])
                          for b in range(exp.shape[0])])

    def posed_vertices(self, identity, exp, pose, scale) -> torch.Tensor:
        """World vertices ``R(pose[:3]) @ (scale * x) + pose[3:]``.

        Args:
            identity: [K] or [B, K] (None = mean); exp: [B, 16]; pose: [B, 6] axis-angle + translation (or [6]);
            scale: scalar or [B].
        Returns:
            [B, V, 3].
        """
        verts = self.canonical_vertices(identity, exp)
        pose, scale = self._pose(pose, scale, verts.shape[0])
        return apply_pose(verts, pose, scale)

    def landmarks(self, identity, exp, pose=None, scale=None) -> torch.Tensor:
        """iBUG-68 landmarks; canonical without ``pose``, world with it. Cheap (136 points, no mesh): the fitter's
        inner loop.

        Args:
            identity: [K] or [B, K] (None = mean); exp: [B, 16] (or [16]); pose: None or [B, 6];
            scale: scalar or [B] (required with ``pose``).
        Returns:
            [B, 68, 3].
        """
        exp = self._exp(exp)
        B = exp.shape[0]
        identity = self._identity(identity, B)
        rest = self._lmk_mean + (identity @ self._lmk_comp).reshape(identity.shape[:-1] + self._lmk_mean.shape)
        if self.landmark_offset is not None:
            rest = rest + self.landmark_offset.repeat(2, 1)  # the open-eye and the closed-lid rows alike
        if identity.dim() == 1:
            pts = self._lmk_basis.deform(rest, exp)
        else:
            pts = torch.cat([self._lmk_basis.deform(rest[b], exp[b: b + 1]) for b in range(B)])
        open_pts, closed_pts = pts[:, :NUM_LANDMARKS], pts[:, NUM_LANDMARKS:]
        # Upper-lid points slide to the closed-lid line with the blink coefficient (as the generator's landmarks).
        coeff = self.blink_coeff.clamp(min=0)
        w = exp[:, coeff].clamp(0.0, 1.0) * (self.blink_coeff >= 0).to(exp.dtype)
        lmk = open_pts + w[..., None] * (closed_pts - open_pts)
        if pose is None:
            return lmk
        if scale is None:
            raise ValueError("scale is required with pose")
        pose, scale = self._pose(pose, scale, B)
        return apply_pose(lmk, pose, scale)

    def landmark_offset_jacobian(self, exp) -> torch.Tensor:
        """d (canonical landmark) / d (landmark offset): [B, 68, 3, 3] for ``exp`` [B, 16] (or [16]).

        Exact, since the expression deformation is affine in the rest position: the identity matrix except where
        the jaw turns a landmark (its rotation about the hinge, scaled by the landmark's jaw weight)."""
        exp = self._exp(exp)
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        points = torch.cat([torch.zeros(1, 3, dtype=self.dtype, device=self.device), eye])  # origin + unit steps
        # Every landmark's deformation applied to the same four points: [4, B, 68, 3] (open-eye rows).
        moved = torch.stack([self._lmk_basis.deform(p.expand(2 * NUM_LANDMARKS, 3), exp)[:, :NUM_LANDMARKS]
                             for p in points])
        # Columns: the image of each unit step minus the image of the origin (the blend part is a translation).
        return (moved[1:] - moved[:1]).permute(1, 2, 3, 0)

    def project_identity(self, rest: torch.Tensor) -> torch.Tensor:
        """Least-squares identity code [K] of neutral canonical vertices ``rest`` [V, 3] (no prior)."""
        rest = torch.as_tensor(rest, dtype=self.dtype, device=self.device)
        if rest.shape != self.mean.shape:
            raise ValueError(f"rest must be [{self.num_vertices}, 3], got {tuple(rest.shape)}")
        A = self._comp_flat.to(torch.float64)
        b = (rest - self.mean).reshape(-1).to(torch.float64)
        return torch.linalg.solve(A @ A.T, A @ b).to(self.dtype)

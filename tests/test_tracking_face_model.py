"""The tracker's face model (cgha/tracking/face_model.py): shapes, the identity space, expressions, the cache.

The default model (128 sampled identities) takes about a minute to build, so these tests build a small one (6
samples, 5 components: enough to reproduce every sample exactly) into a temporary cache folder, once per session.
"""
import numpy as np
import pytest
import torch

import cgha.tracking.face_model as fm
from cgha.synthetic import HeadModel, apply_pose
from cgha.synthetic.expression import EXPRESSION_MODEL, EXPRESSION_NAMES
from cgha.tracking import FaceModel

SAMPLES, COMPONENTS = 6, 5


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    # A fixed folder under the session's base temp: the fitter's tests find the model built here in the cache.
    path = tmp_path_factory.getbasetemp() / "face_model_cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model(cache_dir):
    return FaceModel(num_samples=SAMPLES, num_components=COMPONENTS, cache_dir=cache_dir)


def test_shapes_and_mean_identity(model):
    K, V = COMPONENTS, model.num_vertices
    assert model.num_identity == K and model.exp_dim == len(EXPRESSION_NAMES) == 16
    assert model.mean.shape == (V, 3) and model.components.shape == (K, V, 3) and model.sigma.shape == (K,)
    assert V == HeadModel(0).num_vertices  # the synthetic head's topology
    assert model.faces.shape[1] == 3 and int(model.faces.min()) >= 0 and int(model.faces.max()) < V
    assert torch.equal(model.faces.cpu(), HeadModel(0).faces.cpu())
    # Components are sorted by standard deviation, and scaled by it (over the vertices and landmarks together).
    assert bool((model.sigma[:-1] >= model.sigma[1:]).all()) and bool((model.sigma > 0).all())
    joint = torch.cat([model.components.flatten(1), torch.from_numpy(model._arrays["lmk_components"]).flatten(1)], 1)
    assert torch.allclose(joint.norm(dim=1), model.sigma, rtol=1e-4)
    # Identity code 0 is the mean, shared by the batch or per sample.
    zero = torch.zeros(K)
    assert torch.equal(model.rest_vertices(zero), model.mean)
    assert torch.equal(model.rest_vertices(None), model.mean)
    neutral = torch.zeros(3, 16)
    assert torch.allclose(model.landmarks(zero, neutral), model.landmarks(None, neutral))
    assert torch.allclose(model.landmarks(torch.zeros(3, K), neutral), model.landmarks(None, neutral))
    assert torch.allclose(model.canonical_vertices(None, neutral[:1])[0], model.mean, atol=1e-6)
    code = torch.randn(K, generator=torch.Generator().manual_seed(0))
    verts = model.posed_vertices(code, torch.zeros(2, 16), torch.zeros(2, 6), 0.125)
    assert verts.shape == (2, V, 3) and model.landmarks(code, torch.zeros(4, 16)).shape == (4, 68, 3)
    assert not torch.allclose(model.rest_vertices(code), model.mean)


def test_identity_space_reproduces_the_samples(model):
    """With components = samples - 1 the PCA spans every sample: a sample's rest shape and its landmarks (placed by
    the generator on *its* face, not on identity 0's vertices) come back from its least-squares code."""
    rest, lmk = fm.identity_rest_geometry(fm.SAMPLE_IDENTITY_START + 2)
    code = model.project_identity(torch.from_numpy(rest).float())
    assert torch.allclose(model.rest_vertices(code), torch.from_numpy(rest).float(), atol=1e-4)
    assert torch.allclose(model.landmarks(code, torch.zeros(16))[0], torch.from_numpy(lmk[0]).float(), atol=1e-4)
    # A code of known coefficients projects back to itself.
    known = torch.tensor([0.5, -1.0, 0.25, 2.0, -0.3])
    assert torch.allclose(model.project_identity(model.rest_vertices(known)), known, atol=1e-3)
    # Samples differ from the mean by about one standard deviation per component, not by nothing or by far more.
    assert 0.3 < float(code.norm()) / np.sqrt(COMPONENTS) < 3.0


def test_expressions_move_the_landmarks(model):
    neutral = model.landmarks(None, torch.zeros(16))[0]
    jaw = model.landmarks(None, model.expression(jaw_open=1.0))[0]
    # iBUG 62 / 66: inner lips, upper and lower middle; 8: chin (y up in canonical space).
    assert float((neutral[62] - neutral[66]).norm()) < 0.05
    assert float((jaw[62] - jaw[66]).norm()) > 0.2
    assert float(neutral[8, 1] - jaw[8, 1]) > 0.1
    assert torch.allclose(jaw[17:27], neutral[17:27], atol=1e-6)  # the brows stay put
    # blink_right closes the subject's right eye (iBUG 36-41) only: upper lid 37 meets lower lid 41.
    blink = model.landmarks(None, model.expression(blink_right=1.0))[0]
    assert float((neutral[37] - neutral[41]).norm()) > 0.05
    assert float((blink[37] - blink[41]).norm()) < 0.3 * float((neutral[37] - neutral[41]).norm())
    assert torch.allclose(blink[42:48], neutral[42:48], atol=1e-6)
    # The expression space is the generator's: identity 0's displacements, reproduced on the model's mean face
    # (exactly for the linear blendshapes, closely for the jaw's hinge rotation about other rest positions).
    head = HeadModel(0)
    zero = torch.zeros(1, 16)
    for name, tol in (("smile", 1e-5), ("brow_up_left", 1e-5), ("pucker", 1e-5), ("jaw_open", 0.05)):
        e = head.expression(**{name: 1.0})[None]
        true = head.landmarks(head.canonical_vertices(e), e) - head.landmarks(head.canonical_vertices(zero), zero)
        ours = model.landmarks(None, e) - model.landmarks(None, zero)
        assert float(true.norm(dim=-1).max()) > 0.05
        assert float((true - ours).norm(dim=-1).max()) <= tol * max(1.0, float(true.norm(dim=-1).max())), name


def test_pose_and_scale(model):
    g = torch.Generator().manual_seed(1)
    code, exp = torch.randn(COMPONENTS, generator=g), torch.rand(3, 16, generator=g)
    pose = torch.cat([0.4 * torch.randn(3, 3, generator=g), 0.1 * torch.randn(3, 3, generator=g)], dim=-1)
    scale = torch.tensor([0.1, 0.125, 0.15])
    canon = model.canonical_vertices(code, exp)
    assert torch.allclose(model.posed_vertices(code, exp, pose, scale), apply_pose(canon, pose, scale), atol=1e-6)
    lmk = model.landmarks(code, exp)
    posed = model.landmarks(code, exp, pose, scale)
    assert torch.allclose(posed, apply_pose(lmk, pose, scale), atol=1e-6)
    # Rigid motion keeps the distances between landmarks, times the scale.
    def distances(p):
        return (p[:, :, None] - p[:, None]).norm(dim=-1)

    assert torch.allclose(distances(posed), distances(lmk) * scale[:, None, None], atol=1e-6)


def test_bad_arguments_name_the_argument(model):
    with pytest.raises(ValueError, match="exp"):
        model.landmarks(None, torch.zeros(2, 15))
    with pytest.raises(ValueError, match="identity"):
        model.landmarks(torch.zeros(COMPONENTS + 1), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="identity"):
        model.landmarks(torch.zeros(3, COMPONENTS), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="pose"):
        model.landmarks(None, torch.zeros(2, 16), torch.zeros(2, 5), 1.0)
    with pytest.raises(ValueError, match="scale"):
        model.posed_vertices(None, torch.zeros(2, 16), torch.zeros(2, 6), torch.ones(3))
    with pytest.raises(ValueError, match="scale"):
        model.landmarks(None, torch.zeros(2, 16), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="unknown expression"):
        model.expression(grin=1.0)
    with pytest.raises(ValueError, match="num_components"):
        fm.build_face_model_arrays(num_samples=4, num_components=4)


def test_to_and_meta(model):
    assert model.to("cpu") is model and model.to(dtype=torch.float32) is model
    double = model.to(dtype=torch.float64)
    assert double.mean.dtype == torch.float64 and double.key == model.key
    assert torch.allclose(double.landmarks(None, torch.zeros(16)).float(), model.landmarks(None, torch.zeros(16)))
    meta = model.meta()
    assert meta["face_model"] == fm.FACE_MODEL_NAME == model.name
    assert meta["expression_model"] == EXPRESSION_MODEL
    assert meta["expression_names"] == list(EXPRESSION_NAMES) and meta["identity_dim"] == COMPONENTS


# -- the cache -------------------------------------------------------------------------------------------------

@pytest.fixture
def builds(model, monkeypatch):
    """Count rebuilds; a rebuild returns the session model's arrays instead of sampling identities again."""
    calls = []

    def fake_build(num_samples=fm.DEFAULT_NUM_SAMPLES, num_components=fm.DEFAULT_NUM_COMPONENTS, workers=None):
        calls.append((num_samples, num_components))
        return {k: v.copy() for k, v in model._arrays.items()}

    monkeypatch.setattr(fm, "build_face_model_arrays", fake_build)
    return calls


def test_cache_is_reused_and_keyed(model, cache_dir, builds, tmp_path, monkeypatch):
    path = fm.face_model_path(SAMPLES, COMPONENTS, cache_dir)
    assert path.is_file() and path.parent == cache_dir
    assert FaceModel(num_samples=SAMPLES, num_components=COMPONENTS, cache_dir=cache_dir).key == model.key
    assert builds == []  # loaded, not rebuilt
    # The key names the settings and the generator's geometry: other settings or changed sources are other files.
    assert fm.face_model_path(SAMPLES, COMPONENTS - 1, cache_dir) != path
    assert fm.face_model_path(SAMPLES + 1, COMPONENTS, cache_dir) != path
    with monkeypatch.context() as patch:
        patch.setattr(fm, "_source_hash", lambda: "0123456789abcdef")
        assert fm.face_model_path(SAMPLES, COMPONENTS, cache_dir) != path
    # $CGHA_CACHE_DIR is the default folder.
    monkeypatch.setenv("CGHA_CACHE_DIR", str(tmp_path / "env"))
    assert fm.face_model_path(SAMPLES, COMPONENTS).parent == tmp_path / "env"


def _corrupt_truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_flipped(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside an array: the zip's CRC check fails
    path.write_bytes(bytes(data))


def _corrupt_garbage(path):
    path.write_bytes(b"not an npz file")


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _corrupt_other_key(path):
    _rewrite(path, key=np.asarray("cgha-face-v0-old"))


def _corrupt_nan(path):
    with np.load(path, allow_pickle=False) as data:
        mean = data["mean"].copy()
    mean[0, 0] = np.nan
    _rewrite(path, mean=mean)


def _corrupt_shape(path):
    with np.load(path, allow_pickle=False) as data:
        components = data["components"][:-1].copy()
    _rewrite(path, components=components)


def _corrupt_missing(path):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "lmk_anchor"}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize("corrupt", [_corrupt_truncated, _corrupt_flipped, _corrupt_garbage, _corrupt_other_key,
                                     _corrupt_nan, _corrupt_shape, _corrupt_missing])
def test_invalid_cache_is_rebuilt_never_used(model, cache_dir, builds, tmp_path, corrupt):
    own = tmp_path / "cache"
    own.mkdir()
    path = fm.face_model_path(SAMPLES, COMPONENTS, own)
    path.write_bytes(fm.face_model_path(SAMPLES, COMPONENTS, cache_dir).read_bytes())
    corrupt(path)
    with pytest.warns(RuntimeWarning, match="invalid"):
        rebuilt = FaceModel(num_samples=SAMPLES, num_components=COMPONENTS, cache_dir=own)
    assert builds == [(SAMPLES, COMPONENTS)]
    assert torch.equal(rebuilt.mean, model.mean) and rebuilt.key == model.key
    # The rebuilt file replaced the bad one: it loads cleanly now.
    FaceModel(num_samples=SAMPLES, num_components=COMPONENTS, cache_dir=own)
    assert len(builds) == 1
    assert not list(own.glob(".*.tmp"))  # no temporary file left beside it


def test_unwritable_cache_still_gives_a_model(model, builds, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="cannot write"):
        built = FaceModel(num_samples=SAMPLES, num_components=COMPONENTS, cache_dir=blocker / "cache")
    assert builds and torch.equal(built.mean, model.mean)

"""cgha.tracking.head_region: the cut below the neck keeps the rendered head and neck and drops what lies below."""
from __future__ import annotations

import json

import numpy as np
import torch

from cgha.module.mesh_head import world_to_canonical
from cgha.tracking.head_region import head_region_mask, head_side_of_neck, mesh_silhouette, neck_base_ring
from cgha.utils.image_io import read_mask


def _views(subject):
    """Yields (frame, camera, params, vertices [V, 3], neck ring indices, the camera's npz) for every view."""
    meta = json.loads((subject / "meta.json").read_text())
    for frame in meta["frame_names"]:
        params = np.load(subject / "params" / frame / "params.npz")
        vertices = np.load(subject / "params" / frame / "vertices.npy")
        canonical = world_to_canonical(torch.from_numpy(vertices)[None].double(),
                                       torch.from_numpy(params["pose"]).double(),
                                       torch.from_numpy(params["scale"]).double().reshape(1, 1))[0]
        ring = neck_base_ring(canonical).numpy()
        for camera in meta["camera_ids"]:
            yield frame, camera, params, vertices, ring, np.load(subject / "cameras" / frame / f"camera_{camera}.npz")


def test_neck_ring_is_the_lowest_band_of_vertices():
    vertices = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.2, -0.97, 0.0], [0.0, -0.9, 0.0]])
    assert neck_base_ring(vertices, band=0.05).tolist() == [1, 2]


def test_the_renderers_head_is_kept_and_below_the_neck_is_cut(tiny_subject):
    """On the generator's own views: its exact masks (head, neck and collar, nothing below) lie on the head's side
    of the cut, and rows below the neck's end are cut entirely."""
    meta = json.loads((tiny_subject / "meta.json").read_text())
    side = meta["original_resolution"]
    kept_fraction, checked_rows = [], 0
    for frame, camera, params, vertices, ring, cameras in _views(tiny_subject):
        keep = head_side_of_neck(vertices, ring, params["pose"][0], cameras["extrinsic"], cameras["intrinsic"],
                                 side)
        truth = read_mask(tiny_subject / "images" / frame / f"mask_{camera}.jpg") > 0.5
        kept_fraction.append(keep[truth].mean())
        bottom = np.nonzero(truth.any(1))[0].max()
        below = keep[bottom + 3:]
        if below.size:
            checked_rows += below.shape[0]
            # Upright heads: the cut runs across the image, so rows a few pixels below the true mask's lowest
            # row are background; a cut on the wrong side or along the wrong axis keeps them.
            assert not below[:, side // 4: 3 * side // 4].any(), (frame, camera)
    assert min(kept_fraction) > 0.99, kept_fraction
    assert checked_rows > 0


def test_no_cut_when_the_neck_is_behind_the_camera():
    vertices = np.array([[0.0, 1.0, 1.0], [0.0, -1.0, -1.0], [0.1, -1.0, -1.0]])
    viewmat = np.eye(4)  # camera at the origin looking down +z: the ring (z = -1) is behind it
    K = np.array([[10.0, 0, 8], [0, 10.0, 8], [0, 0, 1]])
    assert head_side_of_neck(vertices, np.array([1, 2]), np.zeros(6), viewmat, K, 16).all()


def test_head_region_keeps_the_head_and_hair_and_drops_a_torso_patch_beside_the_neck(tiny_subject):
    """The renderer's masks plus a patch beside the neck (what selfie segmentation invents on views from below) and a
    tuft of hair on top: the cut keeps the head and the hair and drops the whole patch, which the line through the
    neck ring's lowest point (trackers 1.2.0-1.6.0) partly kept."""
    meta = json.loads((tiny_subject / "meta.json").read_text())
    side = meta["original_resolution"]
    faces = np.load(tiny_subject / "faces.npy")
    checked, old_kept = 0, 0
    for frame, camera, params, vertices, ring, cameras in _views(tiny_subject):
        view = (vertices, faces, ring, params["pose"][0], cameras["extrinsic"], cameras["intrinsic"])
        truth = read_mask(tiny_subject / "images" / frame / f"mask_{camera}.jpg")
        rows = np.nonzero((truth > 0.5).any(1))[0]
        top, bottom = rows.min(), rows.max()
        left = np.nonzero(truth[bottom - 1] > 0.5)[0].min()
        if left < 8 or bottom + 5 > side or top < 4:
            continue
        person = truth.copy()
        patch = np.zeros_like(truth, dtype=bool)
        patch[bottom - 1:bottom + 5, :left - 4] = True
        hair = np.zeros_like(patch)
        centre = int(np.nonzero(truth[top] > 0.5)[0].mean())
        hair[top - 3:top + 1, centre - 2:centre + 3] = True
        person[patch | hair] = 1.0
        kept = head_region_mask(person, *view)
        assert kept.dtype == person.dtype and kept.shape == person.shape
        assert kept[patch].max() == 0, (frame, camera)
        assert np.array_equal(kept[hair], person[hair]), (frame, camera)
        head = truth > 0.5
        assert (kept[head] > 0.5).mean() > 0.99, (frame, camera)
        old = head_side_of_neck(vertices, ring, params["pose"][0], cameras["extrinsic"], cameras["intrinsic"],
                                side)
        old_kept += int((old & patch).sum())
        checked += 1
        as_uint8 = head_region_mask((person * 255).round().astype(np.uint8), *view)
        assert as_uint8.dtype == np.uint8 and as_uint8[patch].max() == 0
    assert checked >= 4 and old_kept > 0


def test_the_mesh_silhouette_is_the_union_of_overlapping_faces():
    # A closed cube seen face-on: every pixel inside its outline is covered by the front and the back face (an even
    # count, which an even-odd polygon fill leaves empty); the silhouette is the whole projected square.
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * 0.5
    corners[:, 2] += 4.0
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))], np.int64)
    K = np.array([[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]])
    silhouette = mesh_silhouette(corners, faces, np.eye(4), K, 64)
    # The near face (z = 3.5) spans 64 * 0.5 / 3.5 = 9.14 px either side of the centre.
    inside = np.zeros((64, 64), bool)
    inside[23:41, 23:41] = True
    assert silhouette[inside].all()
    assert not silhouette[~np.pad(np.ones((20, 20), bool), 22)].any()

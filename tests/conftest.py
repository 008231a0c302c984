"""Shared pytest setup: the `cuda` marker (skipped without a GPU) and a small generated subject."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels (cgha/kernels) run in Triton's CPU interpreter, so their logic is tested on every
# machine that has Triton installed; this must be set before the first `import triton`.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")



def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped when none is present)")
    # Tests press Ctrl-C (signal.raise_signal(SIGINT)) to interrupt training. A suite started as a background job
    # of a script (`nohup .ci/run &`) inherits SIGINT ignored, and the trainer rightly keeps ignoring it then (a
    # nohup'ed run must not stop on Ctrl-C): give the tests the interactive default they simulate.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_subject(tmp_path_factory) -> Path:
    """A generated synthetic subject small enough for CPU tests: 4 frames x 4 cameras at 64^2 (32^2 low-res)."""
    from cgha.synthetic import generate_subject

    out = tmp_path_factory.mktemp("subjects") / "id0"
    return generate_subject(out, identity=0, frames=4, cameras=4, resolution=64, seed=0, lowres=32, progress=False)


@pytest.fixture
def broken(tiny_subject, tmp_path) -> Path:
    """A private copy of the tiny subject that a test may damage."""
    copy = tmp_path / "subject"
    shutil.copytree(tiny_subject, copy)
    return copy


@pytest.fixture(scope="module")
def small_face_model_cache(tmp_path_factory):
    """CGHA_CACHE_DIR set, for one test module and its subprocesses, to a session-wide temporary folder, so the
    small face models the tests build (e.g. 6 samples) are built once and never touch the user's cache."""
    path = tmp_path_factory.getbasetemp() / "face_model_cache"
    path.mkdir(exist_ok=True)
    previous = os.environ.get("CGHA_CACHE_DIR")
    os.environ["CGHA_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CGHA_CACHE_DIR")
    else:
        os.environ["CGHA_CACHE_DIR"] = previous

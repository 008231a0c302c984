"""Prior training on 2 CPU processes (gloo DDP) equals one process with the same global batch, both ranks end with
identical parameters, only rank 0 writes, and a resumed run equals an uninterrupted one."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cgha.prior.config import load_prior_config
from cgha.prior.distributed import Process, process_group
from cgha.prior.train import PRIOR_KIND, SUMMARY_FILE, PriorTrainer
from cgha.recorder.run_files import RunFiles

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def prior_config(data: Path, out: Path, name: str, iters: int, cache: Path, source: str = "codes"):
    os.environ["CGHA_CACHE_DIR"] = str(cache)
    return load_prior_config(ROOT / "config" / "train_prior_demo.yaml", [
        f"data.root={data}", "data.num_identities=2", "data.frames=2", "data.cameras=2", "data.resolution=32",
        "model.options.num_gaussians=300", "model.options.hidden_dim=16", "model.options.latent_dim=8",
        "model.options.face_model_samples=6", "model.options.face_model_components=5", f"train.iters={iters}",
        f"model.options.identity_source={source}", "model.options.encoder_width=8",
        "model.options.encoder_resolution=32",
        "train.identities_per_step=2", "train.views_per_identity=2", "device=cpu", "render.backend=torch",
        f"recorder.checkpoint_path={out}", f"recorder.name={name}", f"recorder.logdir={out}/log_{name}",
        f"recorder.result_path={out}/res", "recorder.log_freq=1", "recorder.save_freq=100"])


def _worker(rank: int, port: int, data: str, out: str, cache: str, source: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    cfg = prior_config(Path(data), Path(out), f"two_{source}", 4, Path(cache), source)
    with process_group(cfg.device) as proc:
        trainer = PriorTrainer(cfg, proc, progress=False)
        trainer.fit()
        torch.save(trainer.prior.state_dict(), Path(out) / f"{source}_rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("prior_ddp")
    cache = tmp_path_factory.getbasetemp() / "face_model_cache"
    cache.mkdir(exist_ok=True)
    return base / "data", base / "out", cache


def one_process(paths, name: str, iters: int, source: str = "codes") -> PriorTrainer:
    data, out, cache = paths
    trainer = PriorTrainer(prior_config(data, out, name, iters, cache, source), Process(0, 1, CPU, False),
                           progress=False)
    trainer.fit()
    return trainer


# Both ways of giving an identity its latent: learned codes, and the image encoder (its parameters are all-reduced
# like the decoders', and the view it reads is drawn by (seed, step, identity) alone).
@pytest.mark.parametrize("source", ["codes", "encoder"])
def test_two_gloo_processes_equal_one_with_the_same_global_batch(paths, source):
    data, out, cache = paths
    single = one_process(paths, f"one_{source}", 4, source)  # also generates the identities before the processes
    mp.spawn(_worker, args=(_free_port(), str(data), str(out), str(cache), source), nprocs=2, join=True)
    rank0, rank1 = (torch.load(out / f"{source}_rank{r}.pt") for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # all-reduced gradients: the ranks never diverge
    # Summation order differs (mean over 4 images vs the average of two means of 2), and Adam normalises each
    # component's gradient, so near-zero components move by up to lr per step either way: compare at a tenth of
    # one step (lr 2e-3), a hundredth of how far the parameters moved.
    for key, value in single.prior.state_dict().items():
        torch.testing.assert_close(rank0[key], value, atol=2e-4, rtol=1e-3, msg=key)
    # The decoders' last layers start at exactly zero: training moved what the comparison covers.
    assert float(rank0["static.out.weight"].abs().max()) > 1e-3
    # Only rank 0 wrote: one prior, one log.
    assert RunFiles(out / f"two_{source}").checkpoint(PRIOR_KIND).is_file()
    assert len((out / f"log_two_{source}" / "metrics.jsonl").read_text().splitlines()) == 4
    if source == "encoder":
        assert float(rank0["encoder.out.weight"].abs().max()) > 1e-3


def test_resume_is_exact(paths):
    data, out, cache = paths
    straight = one_process(paths, "straight", 4)
    one_process(paths, "resumed", 2)
    resumed = one_process(paths, "resumed", 4)
    assert resumed.iteration == 4
    for key, value in straight.prior.state_dict().items():
        assert torch.equal(resumed.prior.state_dict()[key], value), key
    # Run again at its end: no step is timed, and the summary stays strict JSON (null, not NaN).
    finished = one_process(paths, "resumed", 4)
    summary = json.loads((finished.recorder.result_dir / SUMMARY_FILE).read_text(),
                         parse_constant=lambda name: pytest.fail(f"{name} in the training summary"))
    assert summary["timed_steps"] == 0 and summary["timed_seconds"] is None

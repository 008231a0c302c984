"""Prior-training throughput on 1 vs N processes (torchrun: gloo on CPUs, NCCL on GPUs), same global batch.

    python benchmarks/bench_prior_ddp.py --config config/train_prior_demo.yaml --procs 1 2 --repeats 3 \
        --out benchmarks/results/bench_prior_ddp_cpu.json [key=value ...]

Each run is `torchrun --standalone --nproc-per-node N train_prior.py` with train.resume=false into its own run
folder; its prior_train_summary.json (steps/s after 3 warm-up steps, identities/s, images/s) is collected. Runs of
different N alternate, so a change in the machine's load hits every N alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import json_safe, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def run(procs: int, repeat: int, args) -> dict:
    name = f"bench_ddp_{procs}p_{repeat}"
    result_path = Path(args.work) / "results"
    command = ["torchrun", "--standalone", f"--nproc-per-node={procs}", str(ROOT / "train_prior.py"),
               "--config", args.config, *args.overrides, "train.resume=false", f"recorder.name={name}",
               f"recorder.checkpoint_path={args.work}/checkpoints", f"recorder.logdir={args.work}/log/{name}",
               f"recorder.result_path={result_path}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.threads:
        # torchrun sets OMP_NUM_THREADS=1 only for more than one process: set it alike for every N.
        env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((result_path / name / "prior_train_summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="results/bench_prior_ddp")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of every process (0: as launched)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    runs = {procs: [] for procs in args.procs}
    for repeat in range(args.repeats):
        for procs in args.procs:
            runs[procs].append(run(procs, repeat, args))
    rows = []
    for procs, summaries in runs.items():
        rates = [s["images_per_s"] for s in summaries]
        rows.append({"processes": procs, "device": summaries[0]["device"],
                     "images_per_s": statistics.fmean(rates), "spread": (max(rates) - min(rates)) / 2,
                     "identities_per_s": statistics.fmean(s["identities_per_s"] for s in summaries),
                     "runs": len(summaries)})
    out = {"date": time.strftime("%Y-%m-%d"), "config": args.config, "overrides": args.overrides,
           "threads_per_process": args.threads or os.environ.get("OMP_NUM_THREADS"),
           "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(), "rows": rows,
           "runs": {str(k): v for k, v in runs.items()}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe(out), indent=2) + "\n")
    print(markdown_table("", [("processes", "processes", "{}"), ("device", "device", "{}"),
                              ("images/s", "images_per_s", "{:.1f}"), ("± spread", "spread", "{:.1f}"),
                              ("identities/s", "identities_per_s", "{:.1f}"), ("runs", "runs", "{}")], rows))


if __name__ == "__main__":
    main()

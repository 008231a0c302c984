"""One-shot avatars from the prior on held-out identities (issue 22): quality of (a) one-shot from one frontal
image, (b) few-shot from 4 views, (c) the same single image without the prior, (d) multi-view training without the
prior, on the same novel views and novel expressions; fitting time.

    python benchmarks/bench_prior.py fit --subject data/id0000 --mode oneshot --prior checkpoints/prior_k48 \
        --out results/bench_prior/a_k48_id0.json
    python benchmarks/bench_prior.py fit --subject data/id0000 --mode oneshot --no-prior --seed 1 --out ...
    python benchmarks/bench_prior.py report results/bench_prior/*.json --out benchmarks/results/bench_prior.json

A label's runs are averaged: over its runs when they share one --seed, else per seed first (e.g. the mean over the
held-out identities of the prior trained with that seed) and then mean ± half-range over the seeds.

Protocol (every row evaluated on the same images of the held-out identity, 8 cameras x F frames):
- cameras: `frontal` (the most frontal rig camera), `A` = frontal + 3 more spread in azimuth, `B` = the other rig
  cameras (never fitted by any row);
- fitted views: oneshot = frame 0 x frontal; fewshot = frame 0 x A; multiview = frames 0..F-3 x A;
- novel views: frame 0 x B; novel expressions: the last two frames x every rig camera (A + B).
Without a prior (--no-prior) the same avatar representation starts from an untrained prior (decoders output zero:
Gaussians at their triangles, grey), no inversion, a fine-tune without the penalty toward it; --seed seeds that
untrained prior. PSNR / SSIM are full-image (on white, as rendered), cgha.utils.metrics.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch

from common import json_safe, markdown_table

from cgha.avatar.inference import render_frame
from cgha.avatar.post_render import NoPostRender
from cgha.prior.config import OneShotSection, PriorModelConfig
from cgha.prior.data import Views, load_views, open_subject
from cgha.prior.fit import fit_avatar, load_prior
from cgha.prior.geometry import load_face_model
from cgha.prior.model import GaussianPrior
from cgha.utils.device import resolve_device
from cgha.utils.metrics import psnr, ssim

MODES = ("oneshot", "fewshot", "multiview")
HELD_OUT_FRAMES = 2


def camera_sets(subject) -> Dict[str, List[str]]:
    """frontal, A (frontal + 3 spread in azimuth), B (the rest) of a synthetic subject's rig (meta.json)."""
    meta = subject.layout.meta()
    ids = [c for c in meta["camera_ids"] if c not in subject.out_of_rig_cameras]
    az, el = meta["cameras"]["azimuth_deg"], meta["cameras"]["elevation_deg"]
    frontal = min(range(len(ids)), key=lambda i: (az[i] ** 2 + el[i] ** 2))
    others = sorted((i for i in range(len(ids)) if i != frontal), key=lambda i: az[i])
    picks = sorted({others[int(round((j + 0.5) * len(others) / 3 - 0.5))] for j in range(3)})
    chosen = [frontal] + picks
    return {"frontal": [ids[frontal]], "A": [ids[i] for i in chosen],
            "B": [ids[i] for i in range(len(ids)) if i not in chosen]}


def protocol(subject, mode: str) -> Dict[str, tuple]:
    """(frames, cameras) of the fitted views and of both evaluation sets for `mode`."""
    cams = camera_sets(subject)
    frames = list(subject.frames)
    if len(frames) < HELD_OUT_FRAMES + 1:
        raise SystemExit(f"{subject.layout.root}: needs at least {HELD_OUT_FRAMES + 1} frames")
    fitted = {"oneshot": (frames[:1], cams["frontal"]), "fewshot": (frames[:1], cams["A"]),
              "multiview": (frames[:-HELD_OUT_FRAMES], cams["A"])}[mode]
    return {"fitted": fitted, "novel_views": (frames[:1], cams["B"]),
            "novel_expressions": (frames[-HELD_OUT_FRAMES:], cams["A"] + cams["B"])}


@torch.no_grad()
def evaluate(avatar, views: Views, backend: str, device: torch.device) -> Dict[str, float]:
    post_render = NoPostRender(3)
    psnrs, ssims = [], []
    for index in torch.arange(len(views)).split(8):
        batch = views.batch(index, device)
        frame = render_frame(avatar, post_render, batch["exp"], batch["pose"], batch["scale"], batch["viewmats"],
                             batch["Ks"], batch["image"].shape[-1], backend)
        image = frame.image.clamp(0, 1)
        psnrs.append(psnr(image, batch["image"]))
        ssims.append(ssim(image, batch["image"]))
    return {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()), "images": len(views)}


def untrained_prior(model_cfg: PriorModelConfig, seed: int, geometry, face_model, device) -> GaussianPrior:
    cfg = dataclasses.replace(model_cfg, seed=seed)
    meta = {"identities": ["untrained"], "face_model": face_model.meta(), "resolution": 0}
    return GaussianPrior.create(cfg, geometry, torch.zeros(1, face_model.num_identity), meta).to(device)


def run_fit(args) -> None:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.no_prior:
        model_cfg = load_prior(args.like, device).cfg
        face_model, geometry = load_face_model(model_cfg.face_model_samples, model_cfg.face_model_components)
        prior = untrained_prior(model_cfg, args.seed, geometry, face_model, device)
        fit = OneShotSection(invert_steps=0, finetune_steps=args.steps, finetune_lr=args.lr, prior_weight=0.0)
    else:
        prior = load_prior(args.prior, device)
        face_model, _ = load_face_model(prior.cfg.face_model_samples, prior.cfg.face_model_components)
        fit = OneShotSection(invert_steps=args.invert_steps, finetune_steps=args.steps, finetune_lr=args.lr,
                             prior_weight=args.prior_weight)
    subject = open_subject(args.subject, args.resolution)
    sets = protocol(subject, args.mode)
    views = {name: load_views(args.subject, args.resolution, frames, cameras, subject).to(device)
             for name, (frames, cameras) in sets.items()}
    avatar, report = fit_avatar(prior, face_model, views["fitted"], fit, args.backend, progress=False)
    result = {"mode": args.mode, "prior": None if args.no_prior else str(args.prior), "seed": args.seed,
              "subject": str(args.subject), "resolution": args.resolution, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "fit": dataclasses.asdict(fit), "fit_report": report,
              "fitted_views": len(views["fitted"]), "label": args.label,
              **{name: evaluate(avatar, views[name], args.backend, device)
                 for name in ("fitted", "novel_views", "novel_expressions")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("label", "novel_views", "novel_expressions")}))


def _mean_spread(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) / 2 if len(values) > 1 else 0.0,
            "n": len(values)}


def _seed_spread(items: List[dict], value, seeds: List[int]) -> Dict[str, float]:
    """Mean ± half-range of value(item): over the items when they share one seed; over the seeds when several
    (each seed's value the mean over its items, e.g. its held-out identities), so that the spread is the seeds'."""
    if len(seeds) == 1:
        return _mean_spread([value(item) for item in items])
    return _mean_spread([statistics.fmean(value(item) for item in items if item["seed"] == seed) for seed in seeds])


def run_report(args) -> None:
    rows = [json.loads(Path(p).read_text()) for p in args.results]
    groups: Dict[str, List[dict]] = defaultdict(list)
    for row in rows:
        groups[row["label"]].append(row)
    table = []
    for label, items in sorted(groups.items()):
        seeds = sorted({item["seed"] for item in items})
        entry = {"label": label, "runs": len(items), "seeds": len(seeds)}
        for split in ("novel_views", "novel_expressions"):
            for metric in ("psnr", "ssim"):
                entry[f"{split}_{metric}"] = _seed_spread(items, lambda item: item[split][metric], seeds)
        entry["fit_seconds"] = _mean_spread([item["fit_report"]["seconds"] for item in items])
        entry["device_name"] = items[0]["device_name"]
        table.append(entry)
    out = {"date": time.strftime("%Y-%m-%d"), "rows": table, "runs": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe(out), indent=2) + "\n")
    fmt = "{0[mean]:.2f} ± {0[spread]:.2f}"
    print(markdown_table("", [("row", "label", "{}"), ("runs", "runs", "{}"),
                              ("novel views PSNR", "novel_views_psnr", fmt),
                              ("novel views SSIM", "novel_views_ssim", "{0[mean]:.3f} ± {0[spread]:.3f}"),
                              ("novel expr. PSNR", "novel_expressions_psnr", fmt),
                              ("novel expr. SSIM", "novel_expressions_ssim", "{0[mean]:.3f} ± {0[spread]:.3f}"),
                              ("fit s", "fit_seconds", "{0[mean]:.1f} ± {0[spread]:.1f}")], table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit one avatar and evaluate it (one JSON)")
    fit.add_argument("--subject", type=Path, required=True)
    fit.add_argument("--mode", choices=MODES, required=True)
    fit.add_argument("--prior", type=Path, help="prior run folder or prior_latest")
    fit.add_argument("--no-prior", action="store_true", help="start from an untrained prior (rows c, d)")
    fit.add_argument("--like", type=Path, help="--no-prior: a prior whose model options the untrained one takes")
    fit.add_argument("--seed", type=int, default=0,
                     help="the torch seed of the fit; label runs of priors trained with seed s by --seed s")
    fit.add_argument("--invert-steps", type=int, default=300)
    fit.add_argument("--steps", type=int, default=300, help="fine-tune steps")
    fit.add_argument("--lr", type=float, default=2e-3, help="fine-tune learning rate")
    fit.add_argument("--prior-weight", type=float, default=OneShotSection().prior_weight)
    fit.add_argument("--resolution", type=int, default=128)
    fit.add_argument("--backend", default="auto")
    fit.add_argument("--device", default="auto")
    fit.add_argument("--label", required=True, help="row name in the report (runs with one label are averaged)")
    fit.add_argument("--out", type=Path, required=True)
    report = commands.add_parser("report", help="mean ± spread per label over fit JSONs")
    report.add_argument("results", nargs="+", type=Path)
    report.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "fit":
        if args.no_prior == (args.prior is not None) or args.no_prior != (args.like is not None):
            parser.error("give --prior, or --no-prior with --like")
        run_fit(args)
    else:
        run_report(args)


if __name__ == "__main__":
    main()

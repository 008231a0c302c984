#!/usr/bin/env bash
# A Gaussian-head ablation on one GPU at the full-scale synthetic schedule, in calls under the device's 10-minute
# limit: generates the subjects (identity 0, and identity 0 making identity 1's codes for cross-identity), trains the
# full mesh head once (or takes a carried one), then benchmarks/bench_ablation.py on the chosen runs. SCALE=mono does
# the same on the monocular preset (one camera, 300 frames at 512², config/train_gaussianhead_monocular.yaml): no
# cross-identity subject or reenactment; its mesh head (config/train_meshhead_monocular.yaml) is what a mesh-head
# start names: load_meshhead_checkpoint=checkpoints/meshhead_mono_id0/meshhead_latest.
#
#   OUT=DIR [SCALE=rig|mono] [MESH=path/meshhead_latest] [PTQ="v1_lzma x40"] [PTQ_RUNS="*baseline*"] [PTQ_S=40] \
#       [SMOKE=1] [LIMIT=585] [PARALLEL=1] \
#       bash benchmarks/gpu_ablation.sh TAG "NAME:SEED ..." NAME=key=v,key=v ...
#
# Measured on an H100 (2026-12-06): subjects 74 s, the full mesh head 77 s, and two full runs side by side 305 s of
# training each (+ evaluation): a call with MESH carried holds two runs (PARALLEL=2), one without it does not.
# Without MESH the mesh head is trained here and returned (mesh/meshhead_latest in the tar): carry it to the next
# call as MESH (either way checkpoints/<mesh head name>/ is replaced). PTQ: post-training encodings
# (benchmarks/bench_compact_ptq.py) of every finished run, so a run's lossless and integer files are compared on the
# same images; PTQ_RUNS (a glob on the run folder, default every run) picks the runs, PTQ_S the seconds kept for them
# (default 40). SMOKE=1: demo-scale configs (mono: a 24-frame 128² subject), 20 iterations (a CPU check of this
# script). From the repository root (gsplat optional); .dev/head.tar, when present, is the committed tree a device
# call unpacks first. One tar comes back: $OUT/TAG.tar.
# The full-scale config writes `fine` files since 2026-12-07 (each row records its compact_store); earlier rows
# were evaluated on lossless files, about 0.1 dB higher: add the overrides of `python -m cgha.compact.presets
# lossless`, comma-joined, to a variant, or compare only rows stored alike.
set -uo pipefail
TAG=$1; RUNS=$2; shift 2
VARIANTS=(); for v in "$@"; do VARIANTS+=(--variant "$v"); done
[ -f .dev/head.tar ] && tar xf .dev/head.tar
export PYTHONPATH=/tmp/site:$PWD
SMOKE=${SMOKE:-0}; LIMIT=${LIMIT:-585}; PARALLEL=${PARALLEL:-1}; MESH_IN=${MESH:-}; PTQ=${PTQ:-}
PTQ_RUNS=${PTQ_RUNS:-*}; PTQ_S=${PTQ_S:-40}
O=/tmp/o_$TAG; rm -rf $O /tmp/abl; mkdir -p $O
S=$(date +%s); el() { echo $(( $(date +%s) - S )); }
# Killed before the end (a device limit below LIMIT): still send back what is there, each finished run's evaluation.
collect_partial() {
  echo "stopped by a signal at $(el) s" >> $O/times.txt
  for f in /tmp/abl/results/*/evaluation.json; do [ -f "$f" ] && cp "$f" "$O/$(basename $(dirname $f))_evaluation.json"; done
  tar cf ${OUT:-/tmp}/$TAG.tar -C $O . ; exit 143
}
trap collect_partial TERM INT
SCALE=${SCALE:-rig}
case "$SCALE/$SMOKE" in
  rig/1) SUF=_synthetic_demo; CAMS=8; FR=20; DFR=48; RES=256; DEV=cpu; DATA=data/synthetic_demo; RUNTIME=60; IMAGES=2 ;;
  rig/0) SUF=_synthetic; CAMS=16; FR=40; DFR=80; RES=512; DEV=cuda; DATA=data/synthetic; RUNTIME=380; IMAGES=8 ;;
  # One camera: the monocular preset (300 frames at 512², evaluation-only camera oor00); no cross-identity subject
  # or reenactment; the mesh head (for the mesh-head-start variants) from config/train_meshhead_monocular.yaml.
  mono/1) SUF=_monocular_demo; CAMS=mono; FR=24; RES=128; DEV=cpu; DATA=data/synthetic_mono_smoke; RUNTIME=60; IMAGES=2 ;;
  mono/0) SUF=_monocular; CAMS=mono; FR=300; RES=512; DEV=cuda; DATA=data/synthetic_mono; RUNTIME=330; IMAGES=8 ;;
  *) echo "SCALE must be rig or mono, got $SCALE" >&2; exit 2 ;;
esac
EXTRA=(); MEXTRA=()
[ "$SMOKE" = 1 ] && EXTRA=(train.max_iters=20 compact.start_iter=10 train.epochs=0) MEXTRA=(train.max_iters=20 train.epochs=0)
if [ "$SCALE" = mono ]; then
  MESHCFG=config/train_meshhead_monocular.yaml; MESHNAME=meshhead_mono_id0
  if [ "$SMOKE" = 1 ]; then  # the demo mesh head's networks, as the monocular demo config reads them
    MESHCFG=config/train_meshhead_synthetic_demo.yaml
    SMOKE_SUBJECT=(dataset.dataroot=$DATA/id0 dataset.original_resolution=$RES dataset.resolution=64)
    EXTRA+=("${SMOKE_SUBJECT[@]}")
    MEXTRA+=("${SMOKE_SUBJECT[@]}" dataset.num_sample_view=1 recorder.name=$MESHNAME recorder.logdir=log/$MESHNAME)
  fi
else MESHCFG=config/train_meshhead$SUF.yaml; MESHNAME=meshhead${SUF}_id0; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $O/gpu.txt 2>&1
gen() { python3 - "$@" <<'PY'
import sys, torch
from pathlib import Path
from cgha.synthetic import generate_monocular_subject, generate_subject
root, ident, seed, frames, cams, res, dev = sys.argv[1:]  # cams: a count, or "mono" (the monocular preset)
if cams == "mono":
    generate_monocular_subject(Path(root), identity=int(ident), frames=int(frames), resolution=int(res), seed=int(seed),
                               device=torch.device(dev))
else:
    generate_subject(Path(root), identity=int(ident), frames=int(frames), cameras=int(cams), resolution=int(res),
                     seed=int(seed), device=torch.device(dev))
PY
}
gen $DATA/id0 0 0 $FR $CAMS $RES $DEV > $O/gen_id0.log 2>&1; echo "gen id0 rc=$? at $(el) s" >> $O/times.txt
CROSS=(); GEN=""
if [ "$SCALE" = rig ]; then
  ( gen $DATA/id1 1 1 $DFR $CAMS $RES $DEV > $O/gen_id1.log 2>&1; echo "gen id1 rc=$? at $(el) s" >> $O/times.txt
    gen $DATA/id0_codes_of_id1 0 1 $DFR $CAMS $RES $DEV > $O/gen_cross.log 2>&1; echo "gen cross rc=$? at $(el) s" >> $O/times.txt ) &
  GEN=$!
  CROSS=(--cross-identity $DATA/id0_codes_of_id1 --reenact config/reenactment$SUF.yaml --reenact-seeds 0)
fi
MESHDIR=checkpoints/$MESHNAME
if [ -z "$MESH_IN" ]; then  # a fresh mesh head: one left in $MESHDIR by an earlier call would be resumed
  rm -rf $MESHDIR log/$MESHNAME
  python3 train_meshhead.py --config $MESHCFG device=$DEV "${MEXTRA[@]}" > $O/meshhead.log 2>&1
  echo "meshhead rc=$? at $(el) s" >> $O/times.txt
  mkdir -p $O/mesh; cp $MESHDIR/meshhead_latest $O/mesh/ 2>/dev/null; cp log/$MESHNAME/metrics.jsonl $O/mesh/ 2>/dev/null
else
  mkdir -p $MESHDIR; cp "$MESH_IN" $MESHDIR/meshhead_latest || echo "no mesh head at $MESH_IN" >> $O/times.txt
fi
[ -n "$GEN" ] && wait $GEN
LEFT=$(( LIMIT - $(el) - 20 ))
[ -n "$PTQ" ] && LEFT_ABL=$(( LEFT - PTQ_S )) || LEFT_ABL=$LEFT
timeout $LEFT_ABL python3 benchmarks/bench_ablation.py --config config/train_gaussianhead$SUF.yaml --seeds 0 1 2 \
  "${VARIANTS[@]}" --runs $RUNS "${CROSS[@]}" --sheet 5 --parallel $PARALLEL --deadline $(( LEFT_ABL - RUNTIME )) \
  --work /tmp/abl --out $O/ablation.json \
  device=$DEV "${EXTRA[@]}" > $O/ablation.log 2>&1
echo "ablation rc=$? at $(el) s" >> $O/times.txt
if [ -n "$PTQ" ]; then
  for run in /tmp/abl/checkpoints/ablation_$PTQ_RUNS; do
    [ -f "$run/gaussianhead_compact.cgha" ] || continue
    timeout $(( LIMIT - $(el) - 10 )) python3 benchmarks/bench_compact_ptq.py --run $run --device $DEV \
      --variants $PTQ --max-images $IMAGES --out $O/ptq_$(basename $run).json >> $O/ptq.log 2>&1
    echo "ptq $(basename $run) rc=$? at $(el) s" >> $O/times.txt
  done
fi
mkdir -p $O/img; cp /tmp/abl/results/*strip.jpg $O/img/ 2>/dev/null
for f in /tmp/abl/results/*/*_sheet.jpg; do [ -f "$f" ] && cp "$f" "$O/img/$(basename $(dirname $f))_$(basename $f)"; done
for d in /tmp/abl/log/*; do [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$O/$(basename $d)_metrics.jsonl"; done
echo "total $(el) s" >> $O/times.txt
tar cf ${OUT:-/tmp}/$TAG.tar -C $O .

#!/usr/bin/env bash
# Issue 16 on one GPU: baseline vs free_view (train.crop_scale_range=[0.6,1.6] + train.loss_weights.sr_residual=0.1),
# full-scale synthetic schedule, three seeds over two calls (the per-call limit holds three runs).
#   MODE=A: generate the full subjects, train the full mesh head (returned), runs baseline:0 free_view:0 baseline:1
#   MODE=B: the mesh head from .dev/g16_mesh/meshhead_latest (carried), runs free_view:1 baseline:2 free_view:2
# From the repository root, gsplat installed: MODE=A OUT=/some/dir bash benchmarks/free_view_ablation.sh
# (.dev/head.tar, when present, is the committed tree a device call unpacks first.)
# SMOKE=1: demo-scale configs, 20 iterations (a CPU check of this script).  One tar comes back: $OUT/g16_$MODE.tar
set -uo pipefail
[ -f .dev/head.tar ] && tar xf .dev/head.tar
export PYTHONPATH=/tmp/site:$PWD
MODE=${MODE:-A}; SMOKE=${SMOKE:-0}; LIMIT=${LIMIT:-585}
O=/tmp/o16; rm -rf $O; mkdir -p $O
S=$(date +%s); el() { echo $(( $(date +%s) - S )); }
if [ "$SMOKE" = 1 ]; then SUF=_synthetic_demo; CAMS=8; FR=20; DFR=48; RES=256; DEV=cpu; DATA=data/synthetic_demo
  EXTRA=(train.max_iters=20 compact.start_iter=10 train.epochs=0); MEXTRA=(train.max_iters=20 train.epochs=0); RUNTIME=60
else SUF=_synthetic; CAMS=16; FR=40; DFR=80; RES=512; DEV=cuda; DATA=data/synthetic; EXTRA=(); MEXTRA=(); RUNTIME=150; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $O/gpu.txt 2>&1
gen() { python3 - "$@" <<'PY'
import sys, torch
from pathlib import Path
from cgha.synthetic import generate_subject
root, ident, seed, frames, cams, res, dev = sys.argv[1:]
generate_subject(Path(root), identity=int(ident), frames=int(frames), cameras=int(cams), resolution=int(res),
                 seed=int(seed), device=torch.device(dev))
PY
}
gen $DATA/id0 0 0 $FR $CAMS $RES $DEV > $O/gen_id0.log 2>&1; echo "gen id0 rc=$? at $(el) s" >> $O/times.txt
( gen $DATA/id1 1 1 $DFR $CAMS $RES $DEV > $O/gen_id1.log 2>&1; echo "gen id1 rc=$? at $(el) s" >> $O/times.txt
  gen $DATA/id0_codes_of_id1 0 1 $DFR $CAMS $RES $DEV > $O/gen_cross.log 2>&1; echo "gen cross rc=$? at $(el) s" >> $O/times.txt ) &
GEN=$!
MESH=checkpoints/meshhead${SUF}_id0
if [ "$MODE" = A ]; then
  python3 train_meshhead.py --config config/train_meshhead$SUF.yaml device=$DEV "${MEXTRA[@]}" > $O/meshhead.log 2>&1
  echo "meshhead rc=$? at $(el) s" >> $O/times.txt
  mkdir -p $O/mesh; cp $MESH/meshhead_latest $O/mesh/ 2>/dev/null; cp log/meshhead${SUF}_id0/metrics.jsonl $O/mesh/ 2>/dev/null
  RUNS="baseline:0 free_view:0 baseline:1"
else
  mkdir -p $MESH; cp .dev/g16_mesh/meshhead_latest $MESH/ || { echo "no carried mesh head" >> $O/times.txt; }
  RUNS="free_view:1 baseline:2 free_view:2"
fi
wait $GEN
LEFT=$(( LIMIT - $(el) - 20 ))
timeout $LEFT python3 benchmarks/bench_ablation.py --config config/train_gaussianhead$SUF.yaml --seeds 0 1 2 \
  --variant baseline= --variant "free_view=train.crop_scale_range=[0.6,1.6],train.loss_weights.sr_residual=0.1" \
  --runs $RUNS --cross-identity $DATA/id0_codes_of_id1 --sheet 5 --reenact config/reenactment$SUF.yaml --reenact-seeds 0 \
  --parallel 1 --deadline $(( LEFT - RUNTIME )) --work /tmp/abl --out $O/ablation_$MODE.json device=$DEV "${EXTRA[@]}" \
  > $O/ablation.log 2>&1
echo "ablation rc=$? at $(el) s" >> $O/times.txt
mkdir -p $O/img; cp /tmp/abl/results/*strip.jpg $O/img/ 2>/dev/null
for f in /tmp/abl/results/*/*_sheet.jpg; do [ -f "$f" ] && cp "$f" "$O/img/$(basename $(dirname $f))_$(basename $f)"; done
for d in /tmp/abl/log/*; do [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$O/$(basename $d)_metrics.jsonl"; done
echo "total $(el) s" >> $O/times.txt
tar cf ${OUT:-/tmp}/g16_$MODE.tar -C $O .

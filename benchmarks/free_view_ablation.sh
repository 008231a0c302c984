#!/usr/bin/env bash
# Issue 16 on one GPU: baseline vs free_view (train.crop_scale_range=[0.6,1.6] + train.loss_weights.sr_residual=0.1)
# at the full-scale synthetic schedule, three seeds, through benchmarks/gpu_ablation.sh (which says what a call does
# and what comes back). Runs that do not fit one call's limit are skipped: name them in RUNS in the next call, with
# the first call's mesh head carried as MESH.
#   OUT=DIR [PARALLEL=3] [RUNS="baseline:0 free_view:0 ..."] [MESH=.dev/g16_mesh/meshhead_latest] [TAG=g16_A] \
#       bash benchmarks/free_view_ablation.sh
RUNS=${RUNS:-"baseline:0 free_view:0 baseline:1 free_view:1 baseline:2 free_view:2"}
exec bash "$(dirname "$0")/gpu_ablation.sh" "${TAG:-g16_A}" "$RUNS" baseline= \
  "free_view=train.crop_scale_range=[0.6,1.6],train.loss_weights.sr_residual=0.1"

#!/usr/bin/env bash
# Issue 20 on one GPU: the x40 preset trained as usual (its networks quantised after training) vs trained with
# compact.qat=true, at the full-scale synthetic schedule, three seeds, through benchmarks/gpu_ablation.sh (which says
# what a call does and what comes back). Every finished run is also re-encoded losslessly and at x40
# (bench_compact_ptq.py), so each run's quantisation loss is measured on the same images.
#   OUT=DIR [PARALLEL=3] [RUNS="x40:0 x40_qat:0 ..."] [MESH=path/meshhead_latest] [TAG=qat_A] \
#       bash benchmarks/qat_ablation.sh
X40=$(PYTHONPATH=$PWD python3 -m cgha.compact.presets x40 | tr ' ' ',')
RUNS=${RUNS:-"x40:0 x40_qat:0 x40:1 x40_qat:1 x40:2 x40_qat:2"}
PTQ=${PTQ:-"v1_lzma x40"} exec bash "$(dirname "$0")/gpu_ablation.sh" "${TAG:-qat_A}" "$RUNS" "x40=$X40" \
  "x40_qat=$X40,compact.qat=true"

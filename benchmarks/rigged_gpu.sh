#!/usr/bin/env bash
# Issue 19 on one GPU, in calls under the device's 10-minute limit: benchmarks/bench_rigged.py's subjects, then the
# chosen (row, seed) runs side by side, the rigged render's FPS (when baseline seed 0 is among them) and the table.
#
#   OUT=DIR [RUNS="baseline:0 baseline:1 ..."] [LIMIT=540] [ITERS=1500] [MESH_HEAD=1] bash benchmarks/rigged_gpu.sh
#
# RUNS default: every row of bench_rigged.py but `gha`, seeds 0-2 (21 runs; split them over calls). MESH_HEAD=1 also
# trains the short mesh head the `gha` row needs. Every run gets what is left of LIMIT (seconds from the start)
# less 20 s for the table; a run stopped by it leaves its training numbers (runs/*.partial.json). From the
# repository root with gsplat importable; one tar comes back: $OUT/rigged.tar (runs/, fps.json, logs, table).
set -uo pipefail
RUNS=${RUNS:-"$(for row in baseline region_weights smart_densification progressive_resolution color_calibration \
  contrastive all_five; do for s in 0 1 2; do printf '%s:%s ' $row $s; done; done)"}
LIMIT=${LIMIT:-540}; ITERS=${ITERS:-1500}; MESH_HEAD=${MESH_HEAD:-0}
export PYTHONPATH=/tmp/site:$PWD
# Up to ~24 runs share the host's cores: torch's default of one thread per core each would oversubscribe them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
R=/tmp/rigged; O=${OUT:-/tmp}/rigged; rm -rf $R; mkdir -p $O
S=$(date +%s); el() { echo $(( $(date +%s) - S )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $O/gpu.txt 2>&1
SKIP_MESH=--skip-mesh-head; [ "$MESH_HEAD" = 1 ] && SKIP_MESH=
timeout $(( LIMIT / 3 )) python3 benchmarks/bench_rigged.py prepare --root $R $SKIP_MESH > $O/prepare.log 2>&1
echo "prepare rc=$? at $(el) s" >> $O/times.txt
for run in $RUNS; do
  row=${run%:*}; seed=${run#*:}
  ( timeout $(( LIMIT - 20 - $(el) )) python3 benchmarks/bench_rigged.py run --root $R --row $row --seed $seed \
      --iters $ITERS > $O/${row}_s$seed.log 2>&1
    echo "$row s$seed rc=$? at $(el) s" >> $O/times.txt ) &
done
wait
if [[ " $RUNS " == *" baseline:0 "* ]] && [ $(( LIMIT - $(el) )) -gt 30 ]; then
  timeout $(( LIMIT - 10 - $(el) )) python3 benchmarks/bench_rigged.py fps --root $R > $O/fps.log 2>&1
  echo "fps rc=$? at $(el) s" >> $O/times.txt
fi
python3 benchmarks/bench_rigged.py table --root $R --out $O/table.json > $O/table.txt 2>&1
cp -r $R/runs $O/ 2>/dev/null; cp $R/fps.json $O/ 2>/dev/null
tar cf ${OUT:-/tmp}/rigged.tar -C $O .
cat $O/times.txt $O/table.txt

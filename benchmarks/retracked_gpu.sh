#!/usr/bin/env bash
# Issue 18's (and 17's) own-capture gap on one GPU host in one device call: benchmarks/bench_retracked.py tracks the
# scale's subject with MediaPipe (its wheels installed into a folder of their own, on PYTHONPATH for the tracking
# only: their protobuf breaks the training imports), then trains the truth and the re-tracked subject side by side.
#   OUT=DIR WHEELS=.whl MEDIAPIPE_WHEELS=.whlmono [SCALE=mono_full] [SEEDS="0"] [PARALLEL=2] [LIMIT=585] \
#       [DEVICE=cuda] bash benchmarks/retracked_gpu.sh [--photometric] [bench_retracked options and overrides ...]
# WHEELS holds gsplat, omegaconf and (monocular: the video is written with it) imageio-ffmpeg, MEDIAPIPE_WHEELS
# mediapipe==0.10.14 (cp312) and protobuf==4.25.9 (how to get them: bench_retracked.py's docstring); either unset:
# that part is taken as installed (a CPU check of this script: DEVICE=cpu SCALE=mono_demo ... train.max_iters=20).
# Comes back under $OUT: track_only.json, the report (retracked.json), logs.
set -uo pipefail
SCALE=${SCALE:-mono_full}; SEEDS=${SEEDS:-0}; PARALLEL=${PARALLEL:-2}; LIMIT=${LIMIT:-585}; DEVICE=${DEVICE:-cuda}
S=$(date +%s); left() { echo $(( LIMIT - $(date +%s) + S )); }
rm -rf /tmp/site /tmp/mp
[ -n "${WHEELS:-}" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/gsplat*.whl \
  "$WHEELS"/omegaconf*.whl $(ls "$WHEELS"/imageio_ffmpeg*.whl 2>/dev/null)
[ -n "${MEDIAPIPE_WHEELS:-}" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/mp \
  "$MEDIAPIPE_WHEELS"/mediapipe*.whl "$MEDIAPIPE_WHEELS"/protobuf*.whl
mkdir -p $OUT; W=/tmp/retracked_$SCALE
PYTHONPATH=/tmp/mp:/tmp/site:$PWD timeout $(( $(left) - 300 )) python3 benchmarks/bench_retracked.py --scale $SCALE \
  --device $DEVICE --track-only --work $W --out $OUT/track_only.json "$@" > $OUT/track.log 2>&1
echo "track rc=$? at $(( LIMIT - $(left) )) s" >> $OUT/times.txt
PYTHONPATH=/tmp/site:$PWD timeout $(left) python3 benchmarks/bench_retracked.py --scale $SCALE --device $DEVICE \
  --reuse-tracking --work $W --seeds $SEEDS --parallel $PARALLEL --out $OUT/retracked.json "$@" > $OUT/bench.log 2>&1
echo "train rc=$? at $(( LIMIT - $(left) )) s" >> $OUT/times.txt
cp $W/ablation.log $OUT/ 2>/dev/null
for d in $W/ablation/log/*; do [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$OUT/$(basename $d)_metrics.jsonl"; done
cat $OUT/times.txt; tail -12 $OUT/bench.log

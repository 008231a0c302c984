#!/usr/bin/env bash
# Issue 22 on one GPU, in one device call: quality against K and the issue's goals at 128² with three prior seeds.
# Subjects (training identities 100.. with trajectory seed 0, as train_prior.py's data.seed; held-out identities
# 0, 1, 2 with seed = id, as benchmarks/prior_identity_source.sh), then every prior (config/train_prior_full.yaml but
# for K, the resolution, the steps and the seed) side by side on the GPU, then through benchmarks/bench_prior.py: one
# (a) fit alone (its time is the uncontended one-shot time), and side by side: per prior and held-out identity (a)
# one-shot from the frontal image and (b) few-shot from 4 views; per seed and identity (c) the single image without
# a prior and (d) multi-view (4 cameras x 6 frames) without a prior. Report: mean ± half-range over the prior seeds.
#
#   WORK=DIR [OUT=DIR] [KS="16 48"] [SEEDS="0 1 2"] [HELD="0 1 2"] [RES=128] [ITERS=2000] [PARALLEL=6]
#       [FIT_PARALLEL=8] [INVERT=300] [FINETUNE=300] [C_STEPS=300] [D_STEPS=3000] [LIMIT=570] [DEVICE=cuda]
#       [PRIOR_ARGS="train.identities_per_step=4 ..."]
#       bash benchmarks/prior_gpu.sh   ->  $OUT/report.json, priors.json (each prior's training summary), times.txt
#
# A prior still training when the call's time for priors is up (LIMIT minus what the fits need) is stopped; it
# keeps its last checkpoint (recorder.save_freq=250) and times.txt says so; priors.json has no summary for it.
set -uo pipefail
R=$(cd "$(dirname "$0")/.." && pwd)
W=${WORK:-/tmp/prior_gpu}; O=${OUT:-$W/out}; KS=${KS:-"16 48"}; SEEDS=${SEEDS:-"0 1 2"}; HELD=${HELD:-"0 1 2"}
RES=${RES:-128}; ITERS=${ITERS:-2000}; PARALLEL=${PARALLEL:-6}; FIT_PARALLEL=${FIT_PARALLEL:-8}
INVERT=${INVERT:-300}; FINETUNE=${FINETUNE:-300}; C_STEPS=${C_STEPS:-300}; D_STEPS=${D_STEPS:-3000}
LIMIT=${LIMIT:-570}; DEV=${DEVICE:-cuda}; FIT_TIME=${FIT_TIME:-200}
mkdir -p "$W/data" "$W/held" "$W/res" "$W/logs" "$O"
S=$(date +%s); el() { echo $(( $(date +%s) - S )); }
note() { echo "$* at $(el) s" >> "$O/times.txt"; }
share() { echo $(( $(nproc) / $1 > 0 ? $(nproc) / $1 : 1 )); }  # CPU threads for each of $1 processes at once
slot() { while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n; done; }  # wait for a free slot of $1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$O/gpu.txt"
KMAX=0; for K in $KS; do [ "$K" -gt "$KMAX" ] && KMAX=$K; done

# Eight generators at once on the GPU with torch's default threads took 274 s per subject on a 16-core H100 host
# (6.6 s alone). Subjects are small (128², 8 x 8 views): each is made on the CPU with two threads (4.6 s on a
# 2-core CPU machine), as many at once as the host has core pairs, and the GPU is left to the priors.
SUBJECT_THREADS=2
SUBJECT_PARALLEL=$(share $SUBJECT_THREADS)
make_subject() {  # folder identity seed
  OMP_NUM_THREADS=$SUBJECT_THREADS MKL_NUM_THREADS=$SUBJECT_THREADS \
    python3 "$R/preprocess/make_synthetic.py" --out "$1" --identity "$2" --seed "$3" --frames 8 --cameras 8 \
    --resolution "$RES" --device cpu --quiet >> "$W/logs/subjects.log" 2>&1 || echo "subject $1 failed" >> "$O/times.txt"
}
first=1
for i in $HELD; do
  held=$W/held/id$(printf %04d "$i")
  if [ $first = 1 ]; then make_subject "$held" "$i" "$i"; first=0  # builds the face-model cache once
  else slot "$SUBJECT_PARALLEL"; make_subject "$held" "$i" "$i" & fi
done
for ((i = 100; i < 100 + KMAX; i++)); do
  slot "$SUBJECT_PARALLEL"; make_subject "$W/data/id$(printf %04d $i)" $i 0 &
done
wait; note "subjects"

PRIOR_DEADLINE=$(( LIMIT - FIT_TIME - $(el) ))
for K in $KS; do for s in $SEEDS; do
  name=k${K}_s$s; slot "$PARALLEL"
  ( OMP_NUM_THREADS=$(share "$PARALLEL") MKL_NUM_THREADS=$(share "$PARALLEL") timeout "$PRIOR_DEADLINE" \
      python3 "$R/train_prior.py" --config "$R/config/train_prior_full.yaml" \
      data.root="$W/data" data.generate=false data.num_identities="$K" data.resolution="$RES" \
      model.options.seed="$s" train.seed="$s" train.iters="$ITERS" recorder.name="$name" \
      recorder.checkpoint_path="$W/ck" recorder.logdir="$W/log/$name" recorder.result_path="$W/results" \
      recorder.save_freq=250 device="$DEV" ${PRIOR_ARGS:-} > "$W/logs/$name.log" 2>&1
    note "prior $name rc=$?" ) &
done; done
wait
python3 - "$W/results" "$O/priors.json" <<'PY'
import json, sys
from pathlib import Path
found = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*/prior_train_summary.json"))}
Path(sys.argv[2]).write_text(json.dumps(found, indent=2) + "\n")
PY

FIT_THREADS=$(share "$FIT_PARALLEL")
fit() {  # label seed subject mode extra-args...
  local label=$1 seed=$2 subject=$3 mode=$4; shift 4
  OMP_NUM_THREADS=$FIT_THREADS MKL_NUM_THREADS=$FIT_THREADS \
    python3 "$R/benchmarks/bench_prior.py" fit --subject "$subject" --mode "$mode" --seed "$seed" --resolution "$RES" \
    --device "$DEV" --label "$label" "$@" \
    --out "$W/res/$(echo "$label" | tr -c 'a-zA-Z0-9\n' _)_s${seed}_$(basename "$subject").json" >> "$W/logs/fits.log" 2>&1
}
K0=${KS##* }; S0=${SEEDS%% *}; H0=$(ls -d "$W"/held/id* | head -1)
[ -f "$W/ck/k${K0}_s$S0/prior_latest" ] && fit "K=$K0 (a) one-shot, fitted alone (timing)" "$S0" "$H0" oneshot \
  --prior "$W/ck/k${K0}_s$S0" --invert-steps "$INVERT" --steps "$FINETUNE"
note "timing fit"
LIKE=$(ls -d "$W"/ck/k*/ 2>/dev/null | head -1)
[ -n "$LIKE" ] || { note "no prior finished: no fits"; exit 1; }
for s in $SEEDS; do for subject in "$W"/held/id*; do
  slot "$FIT_PARALLEL"; fit "(c) one image, no prior" "$s" "$subject" oneshot --no-prior --like "$LIKE" \
    --steps "$C_STEPS" --lr 1e-2 &
  slot "$FIT_PARALLEL"; fit "(d) multi-view, no prior" "$s" "$subject" multiview --no-prior --like "$LIKE" \
    --steps "$D_STEPS" --lr 1e-2 &
done; done
for K in $KS; do for s in $SEEDS; do
  prior=$W/ck/k${K}_s$s; [ -f "$prior/prior_latest" ] || { note "no prior $prior"; continue; }
  for subject in "$W"/held/id*; do
    slot "$FIT_PARALLEL"; fit "K=$K (a) one-shot, 1 image" "$s" "$subject" oneshot --prior "$prior" \
      --invert-steps "$INVERT" --steps "$FINETUNE" &
    slot "$FIT_PARALLEL"; fit "K=$K (b) few-shot, 4 views" "$s" "$subject" fewshot --prior "$prior" \
      --invert-steps "$INVERT" --steps "$FINETUNE" &
  done
done; done
wait; note "fits"
python3 "$R/benchmarks/bench_prior.py" report "$W"/res/*.json --out "$O/report.json" > "$O/report.md" 2>&1
note "report rc=$?"
tail -n 5 "$W"/logs/*.log > "$O/log_tails.txt" 2>&1

#!/usr/bin/env bash
# Issue 22: which generalises to people the prior never saw, auto-decoder codes or an image encoder
# (model.options.identity_source)? For each K and seed, two priors (config/train_prior_demo.yaml, the same
# identities, steps and seed; only the source of the identity latent differs), then one-shot fits of the held-out
# identities (generator ids 0, 1, 2; never in a prior: training identities start at 100) through
# benchmarks/bench_prior.py: inversion only, inversion + fine-tune, and for the encoder its latent alone (no
# optimisation at all). Report: mean ± half-range over the prior seeds of each seed's mean over the identities.
#
#   WORK=/tmp/prior_identity_source [KS="8 32"] [SEEDS="0 1 2"] [HELD="0 1 2"] [DEVICE=cpu] [RES=64] \
#       [PRIOR_ARGS="train.iters=1000 ..."] bash benchmarks/prior_identity_source.sh  ->  $WORK/report.json
set -euo pipefail
R=$(cd "$(dirname "$0")/.." && pwd)
W=${WORK:-/tmp/prior_identity_source}; KS=${KS:-"8 32"}; SEEDS=${SEEDS:-"0 1 2"}; HELD=${HELD:-"0 1 2"}
DEV=${DEVICE:-cpu}; RES=${RES:-64}
mkdir -p "$W/res" "$W/held"
for i in $HELD; do  # an existing matching subject is kept
  python3 "$R/preprocess/make_synthetic.py" --out "$W/held/id$(printf %04d $i)" --identity $i --seed $i --frames 8 \
    --cameras 8 --resolution $RES --device cpu --quiet
done
fit() {  # prior label seed subject extra-args...
  local prior=$1 label=$2 seed=$3 subject=$4; shift 4
  python3 "$R/benchmarks/bench_prior.py" fit --subject "$subject" --mode oneshot --prior "$prior" --seed $seed \
    --resolution $RES --device $DEV --label "$label" --out "$W/res/$(echo "$label" | tr -c 'a-zA-Z0-9\n' _)_s${seed}_$(basename $subject).json" "$@" \
    >> "$W/fits.log" 2>&1
}
for K in $KS; do for src in codes encoder; do for s in $SEEDS; do
  name=k${K}_${src}_s$s
  echo "$(date +%T) prior $name" >> "$W/progress.log"
  python3 "$R/train_prior.py" --config "$R/config/train_prior_demo.yaml" data.root="$W/data" data.num_identities=$K \
    data.resolution=$RES model.options.identity_source=$src model.options.seed=$s train.seed=$s recorder.name=$name \
    recorder.checkpoint_path="$W/ck" recorder.logdir="$W/log/$name" recorder.result_path="$W/results" device=$DEV \
    ${PRIOR_ARGS:-} > "$W/$name.log" 2>&1
  for subject in "$W"/held/id*; do
    fit "$W/ck/$name" "K=$K $src: inversion" $s "$subject" --invert-steps 150 --steps 0
    fit "$W/ck/$name" "K=$K $src: inversion + fine-tune" $s "$subject" --invert-steps 150 --steps 150
    if [ $src = encoder ]; then fit "$W/ck/$name" "K=$K $src: its latent alone" $s "$subject" --invert-steps 0 --steps 0; fi
  done
done; done; done
python3 "$R/benchmarks/bench_prior.py" report "$W"/res/*.json --out "$W/report.json"

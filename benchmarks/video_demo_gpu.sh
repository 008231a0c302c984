#!/usr/bin/env bash
# Issue 18's `python demo.py --video my.mp4 --device cuda` on one GPU host in one device call, as a user runs it: the
# monocular synthetic subject (300 frames at 512², identity 0) is written as an mp4 of its one camera
# (benchmarks/bench_tracking.export_video, near-lossless libx264) and handed to the demo with the camera's true field
# of view; the demo tracks it, trains the mesh head and the monocular Gaussian head from it, compacts, evaluates the
# last 15 % of the tracked frames and reenacts; arguments are passed on to demo.py (e.g. --no-photometric). The demo
# tracks in process, so MediaPipe's folder (its protobuf) is on PYTHONPATH for the whole run. Should the run stop
# (2026-12-08 on an H100: a CUDA graph capture invalidated by the DataLoader's pin-memory thread, since fixed in
# cgha/utils/cuda_graphs.py), the demo runs a second time without that folder and resumes: it reuses the tracking
# it recorded (video_demo.json) and the finished mesh head.
#   OUT=DIR WHEELS=.whlmono MEDIAPIPE_WHEELS=.whlmono [DEVICE=cuda] [FRAMES=300] [RES=512] [START=mesh-head] \
#       bash benchmarks/video_demo_gpu.sh [demo.py options]
# WHEELS holds gsplat, omegaconf and imageio-ffmpeg, MEDIAPIPE_WHEELS mediapipe==0.10.14 (cp312) and the binary
# protobuf==4.25.9 (benchmarks/bench_retracked.py's docstring); either unset: taken as installed (a CPU check:
# DEVICE=cpu FRAMES=60 RES=256). Comes back as $OUT/video_demo.tar (a device call returns only a few files): the
# demo's log(s) and summary, the evaluation, the held-out sheet, the reenactment strip and both reenactment videos,
# the training logs, the tracking report, times.txt.
set -uo pipefail
DEVICE=${DEVICE:-cuda}; FRAMES=${FRAMES:-300}; RES=${RES:-512}; START=${START:-mesh-head}
S=$(date +%s); el() { echo $(( $(date +%s) - S )); }
rm -rf /tmp/site /tmp/mp
[ -n "${WHEELS:-}" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/gsplat*.whl \
  "$WHEELS"/omegaconf*.whl "$WHEELS"/imageio_ffmpeg*.whl
[ -n "${MEDIAPIPE_WHEELS:-}" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/mp \
  "$MEDIAPIPE_WHEELS"/mediapipe*.whl "$MEDIAPIPE_WHEELS"/protobuf*.whl
DEMO_ARGS=("$@")
O=/tmp/video_demo_out; W=/tmp/video_demo; SUBJECT=$W/truth; VIDEO=$W/mono_id0.mp4; TRACKED=$W/tracked
rm -rf $O; mkdir -p "$OUT" $O
rm -rf $W results/video_mono_id0* results/reenactment/video_mono_id0* checkpoints/video_mono_id0_* log/video_mono_id0_*
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $O/gpu.txt 2>&1
FOV=$(PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks python3 - "$SUBJECT" "$VIDEO" "$FRAMES" "$RES" "$DEVICE" <<'PY'
import sys
from pathlib import Path

import torch

from bench_tracking import export_video
from cgha.synthetic import generate_monocular_subject

subject, video, frames, resolution, device = sys.argv[1:]
generate_monocular_subject(Path(subject), identity=0, frames=int(frames), resolution=int(resolution), seed=0,
                           device=torch.device(device))
print(f"{export_video(Path(subject), Path(video)):.4f}")
PY
)
echo "video rc=$? fov=$FOV at $(el) s" >> $O/times.txt
[ -n "$FOV" ] || { cat $O/times.txt; exit 1; }
demo() { python3 demo.py --video $VIDEO --device $DEVICE --fov $FOV --out $TRACKED --start $START "${DEMO_ARGS[@]}"; }
PYTHONPATH=/tmp/mp:/tmp/site:$PWD demo > $O/demo.log 2>&1; RC=$?
echo "demo rc=$RC at $(el) s" >> $O/times.txt
if [ $RC -ne 0 ] && [ -f $TRACKED/video_demo.json ]; then
  PYTHONPATH=/tmp/site:$PWD demo > $O/demo_retry.log 2>&1
  echo "demo without MediaPipe's folder rc=$? at $(el) s" >> $O/times.txt
fi
python3 - $O <<'PY'
import json, shutil, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = Path("results/video_mono_id0/summary.json")
if summary.is_file():
    paths = json.loads(summary.read_text())["paths"]
    for key in ("summary", "evaluation", "held_out_sheet", "strip", "video_own", "video_synthetic"):
        if paths.get(key) and Path(paths[key]).is_file():
            shutil.copy(paths[key], out / f"{key}{Path(paths[key]).suffix}")
PY
for d in log/video_mono_id0_*; do
  [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$O/$(basename $d)_metrics.jsonl"
done
cp $TRACKED/tracking.json $O/ 2>/dev/null
echo "total $(el) s" >> $O/times.txt
tar cf "$OUT/video_demo.tar" -C $O .
cat $O/times.txt; tail -40 $O/demo.log

#!/usr/bin/env bash
# The one prepared run for a machine with an NVIDIA GPU and no Rust toolchain (docs/performance.md,
# "On a GPU"). From the repository root:
#
#     xtask/gpu/device-check.sh APO_BINARY OUT_DIR [SECONDS]
#
# APO_BINARY is `apo` built here with `cargo build --release -p apo-cli --features cuda`. Steps,
# each under a time limit, skipped once SECONDS (default 540) are spent:
#   1. smoke: 40 stage-1 steps of the small student on a simulated set, on cuda and on the CPU;
#   2. the tiny Qwen2.5-VL fixture: `apo score` on the CPU, on cuda in f32 and in bf16; stage 1
#      (3 steps) and stage 2 (2 steps) with LoRA on cuda and on the CPU;
#   3. for each shape of APO_GPU_SHAPES (default "7b 3b"): a random-weight checkpoint in that
#      shape (make_shape_checkpoint.py), one 512x512 image prompt with 1 + 7 completions of about
#      960 tokens (make_group.py), `apo score` in bf16 (batches of 8), `apo train apo` in bf16
#      (LoRA r 16 on every linear map, sequences_per_pass 2, then 0), and the same workload in
#      transformers + PEFT (torch_shapes.py, with an f32 reference for the log-probs).
# Writes OUT_DIR/{summary.txt, log.txt, results.json, gpu.txt}. APO_GPU_DEVICE=cpu and
# APO_GPU_SHAPES=small APO_GPU_DTYPE=f32 APO_GPU_TOKENS=60 try the script on a machine without a GPU.
set -u
APO=$(realpath "$1")
OUT=$(realpath "$2")
BUDGET=${3:-540}
ROOT=$(pwd)
HERE=$ROOT/xtask/gpu
FIX=$ROOT/crates/apo-models/tests/fixtures
TINY=$FIX/qwen2.5-vl-nested-f32
DEV=${APO_GPU_DEVICE:-cuda}
DTYPE=${APO_GPU_DTYPE:-bf16}
DEVS="$DEV"
[ "$DEV" != cpu ] && DEVS="$DEV cpu"
SHAPES=${APO_GPU_SHAPES:-7b 3b}
PY=${APO_GPU_PYTHON:-python3}
W=${APO_GPU_WORK:-$(mktemp -d -t apo-gpu.XXXXXX)}
mkdir -p "$W" "$OUT"
T0=$(date +%s)
now() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(now))); }
note() { echo "[$(now)s] $*" | tee -a "$OUT/summary.txt"; }

# CUDA's runtime compiler (nvrtc), which burn's CUDA backend loads at run time: the toolkit's
# folders, or the one in Python's nvidia packages.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $("$PY" -c 'import nvidia, os; print(" ".join(os.path.join(p, q, "lib") for p in nvidia.__path__ for q in os.listdir(p)))' 2> /dev/null); do
  if ls "$d"/libnvrtc* > /dev/null 2>&1; then export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; fi
done
if command -v nvidia-smi > /dev/null; then
  nvidia-smi > "$OUT/gpu.txt" 2>&1
  { echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; ldconfig -p | grep -E "nvrtc|libcuda\." ; } >> "$OUT/gpu.txt" 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
fi
"$APO" --version | tee -a "$OUT/summary.txt"

# step NAME LIMIT CMD...: runs CMD under a time limit; its stdout goes to $W/NAME.out, its stderr
# to $W/NAME.err (and the tail of it to log.txt); one line of $W/steps.jsonl records the exit
# status, the seconds and the GPU's peak memory in use (nvidia-smi, every 100 ms) while it ran.
step() {
  local name=$1 limit=$2
  shift 2
  local l
  l=$(left)
  if [ "$l" -lt 30 ]; then
    note "$name: skipped (${l} s left)"
    echo "{\"step\":\"$name\",\"skipped\":true}" >> "$W/steps.jsonl"
    return 99
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  local watch=""
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$W/$name.mem" 2> /dev/null &
    watch=$!
  fi
  local t
  t=$(date +%s%N)
  timeout -k 5 "$limit" "$@" > "$W/$name.out" 2> "$W/$name.err"
  local rc=$?
  local ms=$((($(date +%s%N) - t) / 1000000))
  local peak=null
  if [ -n "$watch" ]; then
    kill "$watch" 2> /dev/null
    wait "$watch" 2> /dev/null
    peak=$(sort -n "$W/$name.mem" | tail -1)
    [ -z "$peak" ] && peak=null
  fi
  { echo "=== $name: rc $rc, $ms ms, GPU peak $peak MiB: $*"; tail -c 3000 "$W/$name.err"; } >> "$OUT/log.txt"
  echo "{\"step\":\"$name\",\"rc\":$rc,\"ms\":$ms,\"gpu_peak_mib\":$peak,\"limit_s\":$limit}" >> "$W/steps.jsonl"
  note "$name: rc $rc, $((ms / 1000)) s, GPU peak $peak MiB"
  return $rc
}

# 1. The small student.
step smoke-synth 60 "$APO" synth --out "$W/smoke-data" --studies 64 --seed 1 --image-size 64
for d in $DEVS; do
  cat > "$W/smoke-$d.toml" << TOML
[data]
dir = "$W/smoke-data"
split = "train"
truncate = true
[sft]
steps = 40
batch_size = 4
[run]
out = "$W/smoke-run-$d"
checkpoint_every = 20
TOML
  step "smoke-sft-$d" 150 "$APO" train sft --config "$W/smoke-$d.toml" --device "$d" --json
done

# 2. The tiny Qwen2.5-VL fixture.
step tiny-score-cpu 60 "$APO" score --model "$TINY" --input "$FIX/score.jsonl" --batch-size 4 --device cpu
step "tiny-score-$DEV-f32" 120 "$APO" score --model "$TINY" --input "$FIX/score.jsonl" --batch-size 4 --device "$DEV"
step "tiny-score-$DEV-bf16" 60 "$APO" score --model "$TINY" --input "$FIX/score.jsonl" --batch-size 4 --device "$DEV" --dtype "$DTYPE"
step tiny-prefs 60 "$APO" consensus build "$W/smoke-data" --out "$W/smoke-prefs.jsonl"
for d in $DEVS; do
  cat > "$W/tiny-$d.toml" << TOML
[data]
dir = "$W/smoke-data"
preferences = "$W/smoke-prefs.jsonl"
truncate = true
[student]
hf = "$TINY"
max_length = 400
[student.lora]
r = 4
alpha = 8
dropout = 0.0
[sft]
steps = 3
batch_size = 2
[apo.optim]
steps = 2
batch_size = 1
learning_rate = 0.001
[run]
out = "$W/tiny-run-$d"
checkpoint_every = 0
TOML
  step "tiny-sft-$d" 120 "$APO" train sft --config "$W/tiny-$d.toml" --device "$d" --json
  step "tiny-apo-$d" 120 "$APO" train apo --config "$W/tiny-$d.toml" --device "$d" --json
done

# 3. Real shapes.
step group-synth 60 "$APO" synth --out "$W/group-data" --studies 8 --seed 3 --image-size 512
step group-prefs 60 "$APO" consensus build "$W/group-data" --out "$W/group-prefs.jsonl"
step group 60 "$PY" "$HERE/make_group.py" "$W/group-data" "$W/group-prefs.jsonl" "$TINY/tokenizer.json" "$W/group" --tokens "${APO_GPU_TOKENS:-960}"
for _ in 1 2 3; do cat "$W/group/score.jsonl" >> "$W/group/score24.jsonl"; done
for s in $SHAPES; do
  step "make-$s" 180 "$PY" "$HERE/make_shape_checkpoint.py" "$TINY" "$W/ck-$s" "$s" --device "$DEV" || continue
  step "score-$s" 240 "$APO" score --model "$W/ck-$s" --input "$W/group/score24.jsonl" --batch-size 8 --device "$DEV" --dtype "$DTYPE" -o "$W/score-$s.jsonl"
  for spp in 2 0; do
    cat > "$W/train-$s-$spp.toml" << TOML
[data]
dir = "$W/group-data"
preferences = "$W/group/prefs.jsonl"
truncate = true
[student]
hf = "$W/ck-$s"
max_length = 2048
sequences_per_pass = $spp
[student.lora]
r = 16
alpha = 32
dropout = 0.0
target_modules = "all-linear"
[apo.optim]
steps = 3
batch_size = 1
learning_rate = 5e-6
[run]
out = "$W/train-$s-$spp"
checkpoint_every = 0
TOML
  done
  step "train-$s-spp2" 240 "$APO" train apo --config "$W/train-$s-2.toml" --device "$DEV" --dtype "$DTYPE" --json
  step "torch-$s" 240 "$PY" "$HERE/torch_shapes.py" "$W/ck-$s" "$W/group" --steps 3 --f32-reference --device "$DEV" --dtype "$DTYPE"
  step "train-$s-spp0" 200 "$APO" train apo --config "$W/train-$s-0.toml" --device "$DEV" --dtype "$DTYPE" --json
  rm -rf "$W/ck-$s"
done

"$PY" "$HERE/collect.py" "$W" > "$OUT/results.json"
note "done"

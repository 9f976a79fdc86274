#!/usr/bin/env bash
# The GPU check (docs/gpu.md): one script for a machine with an NVIDIA GPU, its driver, and a
# Python with PyTorch (CUDA build) and NVIDIA's CUDA 13 runtime packages; no Rust, no network.
# It runs the prebuilt CUDA binary of scripts/build-cuda.sh from the repository root and writes
# results.json and results.md (plus every step's log) into $OUT.
#
#   scripts/gpu-check.sh           on the GPU (3-5 minutes expected; at most 8: time limits)
#   scripts/gpu-check.sh --cpu     the same steps on the CPU at toy sizes, to prove the plumbing
#
# Steps, each recorded whether it passes or fails (a failure does not stop the others):
#   env       GPU, driver, PyTorch; the binary's shared libraries resolved
#   parity    `logits` on the GPU against the committed PyTorch logits (fixtures/model): f32 within
#             1e-3 absolute, --precision bf16 within 1.5% of the largest |logit|, --dtype bf16 within
#             2.5% (the bounds of crates/model/tests/parity.rs)
#   verify    images/s of `verify` (tiny, f32 and bf16) on generated JPEGs
#   train     training steps/s of ours (`bench-train`) and of PyTorch eager
#             (benches/torch_train_step.py) for tiny and base in f32 and bf16, same step, batch and
#             resolution; peak GPU memory of both from nvidia-smi polling (and torch's allocator
#             peak); GPU utilisation sampled during ours
#   finetune  `finetune --precision bf16` end to end on the generated JPEGs: images/s with the
#             loader in front, GPU utilisation
#
# Environment: BIN (default target/cuda-release/illama-tools, unpacked from illama-tools.xz beside
# it when only that was carried; --cpu: target/release/illama-tools, else target/debug/illama-tools), OUT (default gpu-check-out), PY (default python3), DEVICE
# (default cuda:0), IMAGES (JPEG count, default 2048), TINY_BATCH / BASE_BATCH (default 128 / 64),
# STEPS (timed training steps, default 10), BUDGET_S (default 330: later steps are skipped once
# the script has run this long; with the longest step limit, 120 s, the script ends within 8
# minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
if [[ ${1:-} == --cpu || ${1:-} == --dry-run ]]; then
  MODE=cpu
fi
PY=${PY:-python3}
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT/logs" "$OUT/work"
OUT=$(cd "$OUT" && pwd)
RECORDS=$OUT/results.jsonl
: >"$RECORDS"
HELP="$PY $ROOT/scripts/gpu_check.py"
START=$(date +%s)
BUDGET_S=${BUDGET_S:-330}

if [[ $MODE == gpu ]]; then
  BIN=${BIN:-$ROOT/target/cuda-release/illama-tools}
  DEVICE=${DEVICE:-cuda:0}
  TORCH_DEVICE=cuda:${DEVICE#cuda:}
  [[ $DEVICE == cuda ]] && TORCH_DEVICE=cuda:0
  IMAGES=${IMAGES:-2048}
  TINY_BATCH=${TINY_BATCH:-128}
  BASE_BATCH=${BASE_BATCH:-64}
  STEPS=${STEPS:-10}
  SIZE=224
  PARITY_SIZES="64 96 48"
  TRAIN_MODELS="tiny base"
  TINY_ONLY_PARITY=0
  T_PARITY=30 T_VERIFY=90 T_TRAIN=120 T_FINETUNE=120
else
  if [[ -z ${BIN:-} ]]; then
    BIN=$ROOT/target/release/illama-tools
    [[ -x $BIN ]] || BIN=$ROOT/target/debug/illama-tools
  fi
  DEVICE=cpu
  TORCH_DEVICE=cpu
  IMAGES=${IMAGES:-8}
  TINY_BATCH=${TINY_BATCH:-2}
  BASE_BATCH=${BASE_BATCH:-2}
  STEPS=${STEPS:-1}
  SIZE=32
  PARITY_SIZES="64"
  # Stand-ins for tiny and base at toy size (same code paths, seconds on a CPU).
  TRAIN_MODELS="custom:32,2,2 custom:64,2,4"
  TINY_ONLY_PARITY=1
  T_PARITY=120 T_VERIFY=300 T_TRAIN=300 T_FINETUNE=300
fi
# The build script's .xz (what is carried to the GPU machine), unpacked beside it when needed.
if [[ ! -x $BIN && -f $BIN.xz ]]; then
  echo "unpacking $BIN.xz"
  $PY -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BIN.xz" "$BIN" &&
    chmod +x "$BIN"
fi
echo "gpu-check ($MODE): binary $BIN, device $DEVICE, results in $OUT"

# One JSON record per line; `record STEP STATUS KEY=JSON ...` (values are JSON: quote strings).
record() {
  local step=$1 status=$2
  shift 2
  local fields="\"step\": \"$step\", \"status\": \"$status\""
  for kv in "$@"; do
    fields+=", \"${kv%%=*}\": ${kv#*=}"
  done
  echo "{$fields}" >>"$RECORDS"
}
json_str() { $PY -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
# Merges JSON objects (later keys win) and adds step/status: `record_json STEP STATUS JSON...`.
record_json() {
  $PY - "$@" >>"$RECORDS" <<'EOF'
import json, sys
step, status, *objs = sys.argv[1:]
out = {"step": step, "status": status}
for o in objs:
    try:
        out.update(json.loads(o) if o.strip() else {})
    except json.JSONDecodeError:
        out.setdefault("unparsed", []).append(o[-500:])
print(json.dumps(out))
EOF
}
over_budget() { (($(date +%s) - START > BUDGET_S)); }
# `timed NAME SECONDS CMD...`: runs CMD with a time limit, its output in logs/NAME.log; returns its status.
timed() {
  local name=$1 limit=$2
  shift 2
  timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
}
last_json() { grep '^{' "$OUT/logs/$1.log" | tail -1; }
why() { # the status of a step that exited with status $1
  local rc=$1
  if ((rc == 124 || rc == 137)); then echo timeout; else echo "failed (exit $rc)"; fi
}

# GPU sampling around a command: `sample_start NAME`, `sample_stop NAME` -> JSON on stdout.
HAVE_SMI=0
if [[ $MODE == gpu ]] && command -v nvidia-smi >/dev/null; then HAVE_SMI=1; fi
SMI_PID=
GPU_INDEX=${DEVICE#cuda:}
[[ $GPU_INDEX == cuda || $GPU_INDEX == cpu ]] && GPU_INDEX=0
baseline_mib() {
  if ((HAVE_SMI)); then
    nvidia-smi -i "$GPU_INDEX" --query-gpu=memory.used --format=csv,noheader,nounits | head -1 | tr -d ' '
  else echo null; fi
}
sample_start() {
  BASE_MIB=$(baseline_mib)
  if ((HAVE_SMI)); then
    nvidia-smi -i "$GPU_INDEX" --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
      -lms 200 >"$OUT/logs/$1.smi.csv" 2>/dev/null &
    SMI_PID=$!
  fi
}
sample_stop() {
  if [[ -n $SMI_PID ]]; then
    kill "$SMI_PID" 2>/dev/null
    wait "$SMI_PID" 2>/dev/null
    SMI_PID=
    $HELP samples "$OUT/logs/$1.smi.csv" "$BASE_MIB"
  else
    echo '{"samples": 0}'
  fi
}

# ---------------------------------------------------------------------------------------------
echo "== env"
if [[ $MODE == gpu ]]; then
  LIBDIRS=$($HELP libdirs 2>/dev/null)
  export LD_LIBRARY_PATH=$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
{
  echo "binary: $BIN"
  ls -l "$BIN"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ldd "$BIN"
  ((HAVE_SMI)) && nvidia-smi
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  nproc
} >"$OUT/logs/env.log" 2>&1
missing=$(ldd "$BIN" 2>/dev/null | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
gpu_name=null driver=null
if ((HAVE_SMI)); then
  gpu_name=$(json_str "$(nvidia-smi -i "$GPU_INDEX" --query-gpu=name --format=csv,noheader)")
  driver=$(json_str "$(nvidia-smi -i "$GPU_INDEX" --query-gpu=driver_version --format=csv,noheader)")
fi
torch_v=$(json_str "$($PY -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)")
status=ok
if [[ ! -x $BIN ]]; then status="failed: no binary at $BIN"; fi
if [[ -n $missing ]]; then status="failed: libraries not found: $missing"; fi
record env "$status" kind='"env"' mode="\"$MODE\"" device="\"$DEVICE\"" gpu="$gpu_name" driver="$driver" \
  torch="$torch_v" cores="$(nproc)" binary="$(json_str "$BIN")" missing_libraries="$(json_str "$missing")"
echo "$status"

# ---------------------------------------------------------------------------------------------
echo "== parity"
W=$OUT/work
cases=fixtures/model/custom_cases.safetensors
parity_case() { # MODEL_ARGS WEIGHTS CASES SIZE RATE PRECISION_FLAGS PRECISION_NAME BOUND KIND
  local margs=$1 weights=$2 cases=$3 size=$4 r=$5 pflags=$6 pname=$7 bound=$8 kind=$9
  local name="parity-$(basename "$weights" .safetensors)-$size-r$r-$pname"
  if over_budget; then
    record "$name" "skipped: over the time budget" kind='"parity"' case="\"$(basename "$weights") $size r=$r\"" precision="\"$pname\""
    return
  fi
  local x=$W/x-$size-$(basename "$cases" .safetensors).safetensors
  local y=$W/$name.safetensors
  [[ -f $x ]] || $HELP input "$cases" "input_$size" "$x" >>"$OUT/logs/$name.log" 2>&1
  # shellcheck disable=SC2086
  timed "$name" "$T_PARITY" "$BIN" logits --weights "$weights" $margs --input "$x" --output "$y" \
    --force --soft-mask-rate "$r" --device "$DEVICE" $pflags
  local rc=$?
  if ((rc != 0)); then
    record_json "$name" "$(why $rc)" "{\"kind\": \"parity\", \"case\": \"$(basename "$weights") $size r=$r\", \"precision\": \"$pname\", \"error\": $(json_str "$(tail -2 "$OUT/logs/$name.log")")}"
    return
  fi
  local cmp
  cmp=$($HELP compare "$y" "$cases" "logits_${size}_r$r" 2>>"$OUT/logs/$name.log")
  local pass
  pass=$($PY -c 'import json,sys; c=json.loads(sys.argv[1]); print(json.dumps((c[sys.argv[3]] if sys.argv[3] in c else 0) <= float(sys.argv[2])))' \
    "$cmp" "$bound" "$kind" 2>/dev/null || echo false)
  local status=ok
  [[ $pass == true ]] || status="failed: over the bound"
  record_json "$name" "$status" "$cmp" "{\"kind\": \"parity\", \"case\": \"$(basename "$weights") $size r=$r\", \"precision\": \"$pname\", \"bound\": \"$kind <= $bound\", \"pass\": $pass}"
  echo "$name: $status"
}
for size in $PARITY_SIZES; do
  for r in 0.0 0.5 1.0; do
    parity_case "--model custom:64,3,2,256" fixtures/model/custom.safetensors "$cases" "$size" "$r" "" f32 1e-3 max_abs_diff
    parity_case "--model custom:64,3,2,256" fixtures/model/custom.safetensors "$cases" "$size" "$r" "--precision bf16" bf16-mixed 0.015 relative
    parity_case "--model custom:64,3,2,256" fixtures/model/custom.safetensors "$cases" "$size" "$r" "--dtype bf16" bf16-weights 0.025 relative
  done
done
if ((!TINY_ONLY_PARITY)); then
  for r in 0.0 0.5 1.0; do
    parity_case "" fixtures/model/tiny.safetensors fixtures/model/tiny_cases.safetensors 224 "$r" "" f32 1e-3 max_abs_diff
    parity_case "" fixtures/model/tiny.safetensors fixtures/model/tiny_cases.safetensors 224 "$r" "--precision bf16" bf16-mixed 0.015 relative
  done
else
  parity_case "" fixtures/model/tiny.safetensors fixtures/model/tiny_cases.safetensors 224 0.5 "" f32 1e-3 max_abs_diff
fi

# ---------------------------------------------------------------------------------------------
echo "== verify"
JPEGS=$W/jpegs
if [[ ! -d $JPEGS ]]; then
  timed images 120 $HELP images "$JPEGS" "$IMAGES" || record images "failed" error="$(json_str "$(tail -2 "$OUT/logs/images.log")")"
fi
for prec in f32 bf16; do
  over_budget && { record "verify-$prec" "skipped: over the time budget" kind='"verify"'; continue; }
  name=verify-tiny-$prec
  sample_start "$name"
  timed "$name" "$T_VERIFY" "$BIN" verify --weights fixtures/model/tiny.safetensors --imagenet "$JPEGS" \
    --batch-size "$TINY_BATCH" --device "$DEVICE" --precision "$prec" --json
  rc=$?
  smi=$(sample_stop "$name")
  if ((rc == 0)); then
    v=$($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: d[k] for k in ("images","seconds","images_per_second")}))' "$OUT/logs/$name.log" 2>/dev/null ||
      grep -o '"images_per_second": [0-9.e+-]*' "$OUT/logs/$name.log" | sed 's/^/{/; s/$/}/')
    record_json "$name" ok "$v" "$smi" "{\"kind\": \"verify\", \"model\": \"tiny\", \"precision\": \"$prec\"}"
  else
    record_json "$name" "$(why $rc)" "$smi" "{\"kind\": \"verify\", \"model\": \"tiny\", \"precision\": \"$prec\", \"error\": $(json_str "$(tail -3 "$OUT/logs/$name.log")")}"
  fi
  echo "$name: rc $rc"
done

# ---------------------------------------------------------------------------------------------
echo "== train"
for model in $TRAIN_MODELS; do
  batch=$TINY_BATCH
  [[ $model == base || $model == custom:64,2,4 ]] && batch=$BASE_BATCH
  for prec in f32 bf16; do
    tag=${model//[:,]/-}-$prec
    # Ours.
    if over_budget; then
      record "train-ours-$tag" "skipped: over the time budget" kind='"train"' impl='"illama-tools"'
    else
      name=train-ours-$tag
      sample_start "$name"
      timed "$name" "$T_TRAIN" "$BIN" bench-train --model "$model" --device "$DEVICE" --precision "$prec" \
        --batch-size "$batch" --input-size "$SIZE" --steps "$STEPS" --warmup 2 --json
      rc=$?
      smi=$(sample_stop "$name")
      st=ok
      ((rc == 0)) || st=$(why $rc)
      record_json "$name" "$st" "$(last_json "$name")" "$smi" \
        "{\"kind\": \"train\", \"impl\": \"illama-tools\", \"model\": \"$model\", \"precision\": \"$prec\", \"error\": $(json_str "$( ((rc == 0)) || tail -3 "$OUT/logs/$name.log")")}"
      echo "$name: $st"
    fi
    # PyTorch eager, the same step.
    if over_budget; then
      record "train-torch-$tag" "skipped: over the time budget" kind='"train"' impl='"pytorch"'
    else
      name=train-torch-$tag
      amp=none
      [[ $prec == bf16 ]] && amp=bf16
      sample_start "$name"
      timed "$name" "$T_TRAIN" "$PY" benches/torch_train_step.py "$model" --device "$TORCH_DEVICE" --amp "$amp" \
        --batch "$batch" --input-size "$SIZE" --iters "$STEPS" --warmup 2 --json
      rc=$?
      smi=$(sample_stop "$name")
      st=ok
      ((rc == 0)) || st=$(why $rc)
      record_json "$name" "$st" "$(last_json "$name")" "$smi" \
        "{\"kind\": \"train\", \"impl\": \"pytorch\", \"model\": \"$model\", \"precision\": \"$prec\", \"error\": $(json_str "$( ((rc == 0)) || tail -3 "$OUT/logs/$name.log")")}"
      echo "$name: $st"
    fi
  done
done

# ---------------------------------------------------------------------------------------------
echo "== finetune"
if over_budget; then
  record finetune "skipped: over the time budget" kind='"finetune"'
else
  model=${TRAIN_MODELS%% *}
  name=finetune-bf16
  rm -rf "$W/run"
  workers=$(nproc)
  sample_start "$name"
  # Two epochs over the JPEGs, no evaluation: images/s with the loader in front.
  timed "$name" "$T_FINETUNE" "$BIN" finetune --train-dir "$JPEGS" --disable-eval --output-dir "$W/run" \
    --model "$model" --input-size "$SIZE" --epochs 2 --warmup-epochs 0 --batch-size "$TINY_BATCH" \
    --device "$DEVICE" --precision bf16 --workers "$workers" --no-pth --save-ckpt-num 1 --resume none --json
  rc=$?
  smi=$(sample_stop "$name")
  st=ok
  ((rc == 0)) || st=$(why $rc)
  done_line=$(grep '"event":"done"' "$OUT/logs/$name.log" | tail -1)
  rate=$($PY -c 'import json,sys; d=json.loads(sys.argv[1]); n=int(sys.argv[2]) // int(sys.argv[3]) * int(sys.argv[3]) * 2; print(json.dumps({"images": n, "seconds": d["seconds"], "images_per_second": n / d["seconds"]}))' \
    "$done_line" "$IMAGES" "$TINY_BATCH" 2>/dev/null || echo '{}')
  record_json "$name" "$st" "$rate" "$smi" \
    "{\"kind\": \"finetune\", \"model\": \"$model\", \"precision\": \"bf16\", \"workers\": $workers, \"error\": $(json_str "$( ((rc == 0)) || tail -3 "$OUT/logs/$name.log")")}"
  echo "$name: $st"
fi

# ---------------------------------------------------------------------------------------------
echo "== report ($(($(date +%s) - START)) s)"
record total ok seconds="$(($(date +%s) - START))"
rm -rf "$W/run" "$JPEGS"
$HELP report "$RECORDS" "$OUT"

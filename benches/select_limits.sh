#!/usr/bin/env bash
# select from a full-size Hugging Face LLaMA teacher at its physical limits, one run:
#   warm   select per process (RUNS runs after a warm-up; wall time and peak RSS of each), each
#          writing a new output file; then one run replacing the existing output (--force)
#   cold   select with the page cache dropped first (needs root: /proc/sys/vm/drop_caches)
#   dd     reading, cold, with dd: (a) the byte spans of the teacher tensors the selection reads
#          (each tensor whole, merged per file), (b) as many bytes as the selection asks for
#          (its selected rows, each read from its first to its last selected column), in one
#          sequential run from the first shard: what reading those bytes costs at least
#   write  dd writing as many bytes as the output has to a new file beside it: on a file system
#          that allocates (and, mounted with discard, trims) blocks, this alone is a floor
#   hash   select --hash-teacher, warm, and how long it waited for the hashes
#
#   ILLAMA_BENCH_TEACHER=bench-data/llama2-7b-random benches/select_limits.sh [STUDENT]
#
# STUDENT defaults to base (12 layers: the teacher's first 12). Needs python3 (standard library
# only) to read the safetensors headers for the dd spans.
set -euo pipefail
TEACHER=${ILLAMA_BENCH_TEACHER:?set ILLAMA_BENCH_TEACHER to a Hugging Face LLaMA directory}
STUDENT=${1:-base}
RUNS=${RUNS:-5}
BIN=${BIN:-target/release/illama-tools}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/out.safetensors

run() { # label, then the command; prints label, wall s, peak RSS MiB
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" > "$WORK/stdout" 2> "$WORK/stderr" || {
    cat "$WORK/stderr"; exit 1; }
  read -r wall rss < "$WORK/t"
  printf '%-10s %8.3f s %8.1f MiB\n' "$label" "$wall" "$(echo "$rss / 1024" | bc -l)"
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

"$BIN" select --from "$TEACHER" --to "$STUDENT" -o "$OUT" --force --json > "$WORK/report.json"
depth=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["student"]["depth"])' "$WORK/report.json")
# Bytes the selection reads: each selected row of a matrix, a teacher row long (the uniform
# selection spans the whole row); vectors are a few KB and left out.
requested=$(python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c, es = r["teacher"]["config"], {"F16": 2, "BF16": 2, "F32": 4}[r["teacher"]["dtype"]]
total = 0
for t in r["tensors"]:
    if len(t["shape"]) == 2:
        row = c["intermediate"] if t["name"].endswith("mlp.fc2.weight") else c["hidden"]
        total += t["shape"][0] * row * es
print(total)
PY
)
echo "select $TEACHER -> $STUDENT ($depth layers), $BIN"
echo "label      wall         peak RSS"
# Each warm run writes a new file (the previous output is deleted first, untimed); one more run
# replaces an existing output (`--force`), which adds what the file system takes to free it.
for i in $(seq "$RUNS"); do
  rm -f "$OUT"; sync
  run "warm-$i" "$BIN" select --from "$TEACHER" --to "$STUDENT" -o "$OUT"
done
sync
run replace "$BIN" select --from "$TEACHER" --to "$STUDENT" -o "$OUT" --force
size=$(stat -c %s "$OUT")
for i in 1 2; do
  rm -f "$WORK/ddw"; sync
  run "write-$i" dd if=/dev/zero of="$WORK/ddw" bs=4M iflag=count_bytes count="$size" status=none
done
rm -f "$WORK/ddw"
if drop 2>/dev/null; then
  run cold "$BIN" select --from "$TEACHER" --to "$STUDENT" -o "$OUT" --force
  python3 - "$TEACHER" "$depth" > "$WORK/spans" <<'PY'
import json, os, re, struct, sys
teacher, depth = sys.argv[1], int(sys.argv[2])
index = os.path.join(teacher, "model.safetensors.index.json")
files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) \
    else [f for f in os.listdir(teacher) if f.endswith(".safetensors")]
want = re.compile(r"layers\.(\d+)\.(self_attn|mlp|input_layernorm|post_attention_layernorm)")
for f in files:
    path = os.path.join(teacher, f)
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    spans = sorted(
        (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__" and (m := want.search(k)) and int(m.group(1)) < depth)
    merged = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    for s, e in merged:
        print(path, s, e - s)
PY
  drop
  start=$(date +%s.%N)
  total=0
  while read -r path skip count; do
    dd if="$path" of=/dev/null bs=1M iflag=skip_bytes,count_bytes skip="$skip" count="$count" status=none
    total=$((total + count))
  done < "$WORK/spans"
  end=$(date +%s.%N)
  printf '%-10s %8.3f s  (%d bytes in %d spans)\n' dd-spans "$(echo "$end - $start" | bc -l)" "$total" "$(wc -l < "$WORK/spans")"
  first=$(head -1 "$WORK/spans" | cut -d' ' -f1)
  drop
  start=$(date +%s.%N)
  dd if="$first" of=/dev/null bs=1M iflag=count_bytes count="$requested" status=none
  end=$(date +%s.%N)
  printf '%-10s %8.3f s  (%d bytes, the selection'"'"'s reads, sequential)\n' dd-same "$(echo "$end - $start" | bc -l)" "$requested"
else
  echo "cold: skipped (cannot write /proc/sys/vm/drop_caches; run as root)"
fi
# Warm the whole teacher once so that hashing measures hashing, not the disk.
cat "$TEACHER"/* > /dev/null
run hash "$BIN" select --from "$TEACHER" --to "$STUDENT" -o "$OUT" --force --hash-teacher
grep "hashing the teacher added" "$WORK/stdout" || true

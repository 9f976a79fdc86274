#!/usr/bin/env bash
# Wall time and peak RSS of `select` and `convert` on a full-size LLaMA teacher, against the
# reference Python and plain copies. Every measured command is one process under /usr/bin/time -v.
#
#   benches/run.sh TEACHER_DIR [WORK_DIR]
#
# TEACHER_DIR: a Hugging Face LLaMA directory with model.safetensors.index.json, e.g. the random one
#   written by `cargo run --release -p illama-select --example gen_llama_teacher -- DIR`.
# WORK_DIR (default bench-data/run): outputs and logs; needs about 2x the teacher's size free
#   during the convert steps (the teacher as .pth, then back as safetensors). Large outputs are
#   deleted as soon as they are measured; results.tsv, summary.txt and the logs stay.
#
# Environment: RUNS (default 3) timed runs per select command (ours and the reference);
#   CONVERT_RUNS (default 3) rounds of the convert step (each: convert, cp, convert back, cp,
#   torch baseline per shard);
#   PY (default python3); BIN (default target/release/illama-tools);
#   STEPS (default "machine select reference convert") to run only some steps;
#   KEEP_PTH=1 keeps WORK_DIR/teacher.pth.
#
# "Warm" means the input files were read once with cat right before the command (the page cache
# holds them when they fit in RAM; a 13.5 GB teacher fits in 24 GB, teacher + output do not).
set -euo pipefail

TEACHER=${1:?usage: benches/run.sh TEACHER_DIR [WORK_DIR]}
WORK=${2:-bench-data/run}
RUNS=${RUNS:-3}
CONVERT_RUNS=${CONVERT_RUNS:-3}
PY=${PY:-python3}
BIN=${BIN:-target/release/illama-tools}
STEPS=${STEPS:-machine select reference convert}
HERE=$(cd "$(dirname "$0")" && pwd)
TEACHER=$(cd "$TEACHER" && pwd)

mkdir -p "$WORK/logs"
RESULTS=$WORK/results.tsv
[ -f "$RESULTS" ] || printf 'step\trun\twall_s\tuser_s\tsys_s\tmaxrss_mib\tmajor_faults\tfs_in_blocks\tfs_out_blocks\tload1_before\n' >"$RESULTS"

has_step() { [[ " $STEPS " == *" $1 "* ]]; }

warm() { # read files once so that they are in the page cache
    local t0 t1
    t0=$(date +%s.%N)
    cat "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "  (warmed $(du -cb "$@" | tail -1 | cut -f1) bytes in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)"
}

# Same starting state for every write-heavy command: its previous output removed and flushed,
# then a pause. On the VM these numbers come from, a writer started right after a large rm was
# seen to run 2-5x slower (all in kernel time; see docs/benchmarks.md), so both sides of each
# comparison get the same preparation.
fresh() {
    rm -rf "$@"
    sync
    sleep "${SETTLE:-5}"
}

# measure STEP RUN CMD...: runs CMD under /usr/bin/time -v, appends one line to results.tsv
measure() {
    local step=$1 run=$2
    shift 2
    local log="$WORK/logs/$step.$run.log" tv="$WORK/logs/$step.$run.time" load
    load=$(cut -d' ' -f1 /proc/loadavg) # other work on the machine skews wall times: recorded
    if ! /usr/bin/time -v -o "$tv" "$@" >"$log" 2>&1; then
        echo "FAILED: $step run $run: $*" >&2
        tail -20 "$log" >&2
        tail -30 "$tv" >&2
        return 1
    fi
    awk -F': ' -v step="$step" -v run="$run" -v load="$load" '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); wall = (n == 3) ? p[1]*3600 + p[2]*60 + p[3] : p[1]*60 + p[2] }
        /User time/ { user = $2 }
        /System time/ { sys = $2 }
        /Maximum resident set size/ { rss = $2 / 1024 }
        /Major \(requiring I\/O\) page faults/ { maj = $2 }
        /File system inputs/ { fin = $2 }
        /File system outputs/ { fout = $2 }
        END { printf "%s\t%s\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t%d\t%d\t%s\n", step, run, wall, user, sys, rss, maj, fin, fout, load }
    ' "$tv" | tee -a "$RESULTS"
}

shards=("$TEACHER"/*.safetensors)

if has_step machine; then
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "nproc: $(nproc)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
        echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
        echo "swap: $(free -g | awk '/^Swap:/ {print $2 " GiB"}')"
        dev=$(df --output=source "$WORK" | tail -1)
        echo "filesystem: $(df --output=fstype "$WORK" | tail -1 | tr -d ' ') on $dev ($(lsblk -dno ROTA,SIZE "$dev" 2>/dev/null | awk '{print ($1 == 1 ? "reported rotational" : "non-rotational") ", " $2}'))"
        echo "kernel: $(uname -r)"
        echo "rustc: $(rustc --version)"
        echo "python: $($PY -c 'import sys, torch, safetensors; print(sys.version.split()[0], "torch", torch.__version__, "safetensors", safetensors.__version__)')"
        echo "teacher: $TEACHER ($(du -cb "${shards[@]}" | tail -1 | cut -f1) bytes in ${#shards[@]} shards)"
    } | tee "$WORK/machine.txt"
fi

if has_step select; then
    echo "== select (ours), warm"
    warm "${shards[@]}"
    for p in tiny small base; do
        for r in $(seq 1 "$RUNS"); do
            measure "select-$p" "$r" "$BIN" select --from "$TEACHER" --to "$p" -o "$WORK/ours_$p.safetensors" --force
        done
        echo "  output: $(stat -c %s "$WORK/ours_$p.safetensors") bytes"
    done
fi

if has_step reference; then
    echo "== select (reference Python), warm"
    warm "${shards[@]}"
    for p in tiny small base; do
        for r in $(seq 1 "$RUNS"); do
            measure "reference-$p" "$r" "$PY" "$HERE/reference_select.py" "$TEACHER" "$p" "$WORK/ref_$p.pth"
        done
        grep reference "$WORK/logs/reference-$p.$RUNS.log" | sed 's/^/  /'
        echo "  output: $(stat -c %s "$WORK/ref_$p.pth") bytes"
    done
    echo "== ours == reference?"
    for p in tiny small base; do
        if [ -f "$WORK/ours_$p.safetensors" ]; then
            "$PY" "$HERE/compare_select.py" "$WORK/ours_$p.safetensors" "$WORK/ref_$p.pth" | tee "$WORK/logs/compare-$p.log"
        fi
    done
fi

if has_step convert; then
    PTH=$WORK/teacher.pth    # a directory: pytorch_model-0000N-of-0000M.bin + index
    ST=$WORK/teacher-st      # back to safetensors
    for r in $(seq 1 "$CONVERT_RUNS"); do
        echo "== convert safetensors -> .pth (warm input), run $r"
        fresh "$PTH" # else --force times the removal of the previous output too
        warm "${shards[@]}"
        measure convert-st-to-pth "$r" "$BIN" convert "$TEACHER" -o "$PTH" --to pth --force
        sync
        echo "== cp -r of the safetensors teacher (warm input), run $r"
        fresh "$WORK/cp-teacher"
        warm "${shards[@]}"
        measure cp-safetensors "$r" cp -r "$TEACHER" "$WORK/cp-teacher"
        sync

        pth_shards=("$PTH"/*.bin)
        echo "== convert .pth -> safetensors (warm input), run $r"
        fresh "$WORK/cp-teacher" "$ST"
        warm "${pth_shards[@]}"
        measure convert-pth-to-st "$r" "$BIN" convert "$PTH" -o "$ST" --to safetensors --force
        sync
        if [ "$r" = 1 ]; then
            "$PY" "$HERE/check_roundtrip.py" "$TEACHER" "$ST" | tee "$WORK/logs/roundtrip.log"
        fi
        echo "== cp -r of the .pth directory (warm input), run $r"
        fresh "$ST"
        warm "${pth_shards[@]}"
        measure cp-pth "$r" cp -r "$PTH" "$WORK/cp-pth"
        sync

        echo "== baseline: torch.load + safetensors.torch.save_file, one process per shard (warm input), run $r"
        fresh "$WORK/cp-pth"
        mkdir -p "$WORK/torch-st"
        i=0
        for s in "${pth_shards[@]}"; do
            i=$((i + 1))
            [ "$i" = 1 ] || fresh "$WORK/torch-st/$(basename "${pth_shards[$((i - 2))]}" .bin).safetensors"
            warm "$s"
            measure "torch-load-save-shard$i" "$r" "$PY" "$HERE/torch_convert_baseline.py" "$s" "$WORK/torch-st/$(basename "$s" .bin).safetensors"
            sync
        done
        rm -rf "$WORK/torch-st"
    done
    [ "${KEEP_PTH:-0}" = 1 ] || rm -rf "$PTH"
fi

# Medians of wall time, max of peak RSS, per step; the torch baseline also summed over shards per
# run; then the ratios docs/benchmarks.md reports.
awk -F'\t' '
    function add(step, run, wall, rss) {
        if (!(step in r)) { name[++n] = step; r[step] = 0 }
        t[step] = t[step] " " wall
        if (rss + 0 > r[step]) r[step] = rss + 0
    }
    function median(s,    m, v, a, b, x) {
        m = split(substr(t[s], 2), v, " ")
        for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (v[b] + 0 < v[a] + 0) { x = v[a]; v[a] = v[b]; v[b] = x }
        cnt[s] = m
        return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    NR > 1 {
        add($1, $2, $3, $6)
        if ($1 ~ /^torch-load-save-shard/) { tot[$2] += $3; if ($6 + 0 > trss) trss = $6 + 0 }
    }
    END {
        for (k in tot) add("torch-load-save-all-shards", k, tot[k], trss)
        printf "%-28s %5s %10s %13s\n", "step", "runs", "median s", "peak RSS MiB"
        for (i = 1; i <= n; i++) { s = name[i]; med[s] = median(s); printf "%-28s %5d %10.2f %13.1f\n", s, cnt[s], med[s], r[s] }
        print ""
        if (("select-base" in med) && ("reference-base" in med))
            printf "select base: reference/ours time %.1fx, RSS %.1fx\n", med["reference-base"] / med["select-base"], r["reference-base"] / r["select-base"]
        if (("convert-st-to-pth" in med) && ("cp-safetensors" in med))
            printf "convert safetensors -> .pth / cp -r: time %.2fx\n", med["convert-st-to-pth"] / med["cp-safetensors"]
        if (("convert-pth-to-st" in med) && ("cp-pth" in med))
            printf "convert .pth -> safetensors / cp -r: time %.2fx\n", med["convert-pth-to-st"] / med["cp-pth"]
        if (("convert-pth-to-st" in med) && ("torch-load-save-all-shards" in med))
            printf "convert .pth -> safetensors / torch.load+save_file: time %.2fx, RSS %.3fx\n", med["convert-pth-to-st"] / med["torch-load-save-all-shards"], r["convert-pth-to-st"] / r["torch-load-save-all-shards"]
    }' "$RESULTS" | tee "$WORK/summary.txt"

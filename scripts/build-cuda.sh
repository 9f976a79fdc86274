#!/usr/bin/env bash
# Builds the release binary with `--features cuda` on a machine without a GPU or a CUDA install,
# from NVIDIA's PyPI wheels, and leaves a stripped copy for the GPU machine.
#
#   scripts/build-cuda.sh
#
# What it does:
#  1. Installs the CUDA 13.0 build pieces (nvcc, ptxas, cicc, the runtime and crt headers, cuBLAS,
#     cuBLASLt, cuRAND, NVRTC) from PyPI wheels into target/cuda-toolkit/site (pip --target, no
#     cache, so no wheel is kept). Skipped when that folder already holds them.
#  2. Makes target/cuda-toolkit/link: the unversioned names the linker asks for (libcublas.so ->
#     libcublas.so.13, ...) and a stub libcuda.so (soname libcuda.so.1) whose functions are the
#     driver API's, from the preprocessed cuda.h: the real libcuda.so.1 comes with the GPU
#     driver, and no wheel ships it or its stub.
#  3. Builds with CUDA_COMPUTE_CAP=90 (H100/H200; without it the kernel build asks nvidia-smi),
#     CUDA_ROOT/CUDA_HOME and PATH on the wheels' toolkit.
#  4. Copies the binary, stripped, to target/cuda-release/illama-tools and compressed to
#     target/cuda-release/illama-tools.xz (what is carried to the GPU machine, where
#     scripts/gpu-check.sh unpacks it), checks that the .xz is small enough to be carried, and
#     prints the CUDA version and the shared libraries the binary needs at run time.
#
# Why CUDA 13.0: the GPU machine's driver (580) runs CUDA 13.0 (and older) code, its Python
# carries the CUDA 13 runtime libraries (libcublas.so.13, libcurand.so.10, libnvrtc.so.13,
# libcudart.so.13), and candle's cudarc supports 13.0 (up to 13.4). The kernels are compiled to PTX
# that the driver compiles at load time, and a driver cannot load PTX from a newer toolkit than
# its own, so nvcc must be 13.0, not the newest 13.x.
#
# Environment: CARGO_TARGET_DIR (default target), PY (default python3), CUDA_COMPUTE_CAP (default
# 90), BUILD_JOBS (default: all cores), MAX_CARRY_MIB (default 20: the largest illama-tools.xz
# accepted; the tracked files of the repository are about 34 MB of the 64 MiB carried).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3}
PREFIX=$ROOT/target/cuda-toolkit
SITE=$PREFIX/site
LINK=$PREFIX/link
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=$ROOT/target/cuda-release
MAX_CARRY_MIB=${MAX_CARRY_MIB:-20}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

# The pinned CUDA 13.0 wheels (the toolkit's own versions of 13.0 update 2; cuRAND is 10.x).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

start=$(date +%s)
step() { echo "== $* ($(($(date +%s) - start)) s)"; }

step "1. CUDA 13.0 build pieces from PyPI into ${SITE#"$ROOT"/}"
CU=$SITE/nvidia/cu13
if [[ -x $CU/bin/nvcc && -f $CU/lib/libcublasLt.so.13 && -f $CU/include/cuda.h ]]; then
  echo "already installed"
else
  rm -rf "$SITE"
  "$PY" -m pip install --quiet --no-cache-dir --no-deps --disable-pip-version-check \
    --target "$SITE" "${WHEELS[@]}"
fi
du -sh "$SITE" | sed 's/^/installed: /'

step "2. link names and the libcuda stub in ${LINK#"$ROOT"/}"
rm -rf "$LINK"
mkdir -p "$LINK"
for lib in cudart:13 cublas:13 cublasLt:13 curand:10 nvrtc:13; do
  ln -s "$CU/lib/lib${lib%%:*}.so.${lib##*:}" "$LINK/lib${lib%%:*}.so"
done
# Every function cuda.h declares, under the names it binds them to (cuCtxCreate -> cuCtxCreate_v4).
gcc -E -P -I"$CU/include" -x c "$CU/include/cuda.h" |
  grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u |
  awk '{ print "void " $1 "(void) {}" }' >"$LINK/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/cuda_stub.c"
echo "libcuda stub: $(wc -l <"$LINK/cuda_stub.c") functions"

step "3. cargo build --release --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
export CUDA_ROOT=$CU CUDA_HOME=$CU CUDA_PATH=$CU
export PATH=$CU/bin:$PATH
export LIBRARY_PATH=$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}
# libcublas.so.13 needs libcublasLt.so.13: the linker finds it through -rpath-link.
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LINK -C link-arg=-Wl,-rpath-link=$CU/lib"
export CUDAFORGE_THREADS=${BUILD_JOBS:-$(nproc)}
nvcc --version | tail -2
cargo build --release --locked --features cuda ${BUILD_JOBS:+-j "$BUILD_JOBS"} --bin illama-tools
BIN=$TARGET_DIR/release/illama-tools

step "4. stripped copy in ${OUT_DIR#"$ROOT"/}, and its xz for carrying"
mkdir -p "$OUT_DIR"
strip -o "$OUT_DIR/illama-tools" "$BIN"
# The stripped binary is mostly candle's kernels (PTX text, and the sm_90 code of its quantised
# matmuls): xz brings it to a fraction of its size. scripts/gpu-check.sh unpacks it.
if command -v xz >/dev/null; then
  xz -T0 -6 -f -k -c "$OUT_DIR/illama-tools" >"$OUT_DIR/illama-tools.xz"
else
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], "rb"), lzma.open(sys.argv[2], "wb", preset=6))' \
    "$OUT_DIR/illama-tools" "$OUT_DIR/illama-tools.xz"
fi
mib() { echo $(($(stat -c %s "$1") / 1024 / 1024)); }
echo "binary: $(mib "$BIN") MiB as built, $(mib "$OUT_DIR/illama-tools") MiB stripped, $(mib "$OUT_DIR/illama-tools.xz") MiB as xz"
if (($(stat -c %s "$OUT_DIR/illama-tools.xz") > MAX_CARRY_MIB * 1024 * 1024)); then
  echo "error: illama-tools.xz is over ${MAX_CARRY_MIB} MiB; with the repository it would not fit the 64 MiB carried to the GPU machine" >&2
  exit 1
fi

echo "CUDA: $(nvcc --version | grep -o 'release [0-9.]*'), kernels for sm_$CUDA_COMPUTE_CAP"
echo "shared libraries the binary needs at run time (DT_NEEDED, resolved by the dynamic loader"
echo "at start-up: candle links cudarc with its dynamic-linking feature, nothing is dlopen'ed):"
readelf -d "$OUT_DIR/illama-tools" | awk '/NEEDED/ { gsub(/[][]/, "", $5); print "  " $5 }'
echo "resolved here against the wheels (libcuda.so.1 comes from the GPU driver, not found here):"
LD_LIBRARY_PATH=$CU/lib ldd "$OUT_DIR/illama-tools" | grep -E 'cuda|cublas|curand|nvrtc' | sed 's/^\s*/  /'
step "done"

#!/usr/bin/env bash
# gpu-check.sh: build fedtune's CUDA test binaries on a machine with Go and
# the CUDA 11.8 headers (no GPU needed), and run them on a machine with an
# NVIDIA GPU and driver (no Go needed).
#
#   scripts/gpu-check.sh build   build into $GPU_CHECK_DIR (default bin/gpu-check):
#                                  cuda.test     kernels/cuda
#                                  cudadev.test  model/engine/cudadev
#                                  trainer.test  trainer
#                                  cli.test      internal/cli (its CUDA
#                                                tests: serve --device cuda)
#                                (go test -c -tags fedcuda)
#                                and a copy of the PTX the binaries embed (ptx/)
#   scripts/gpu-check.sh run     run them, each from its package folder (the
#                                tests read testdata/ there); without a GPU it
#                                says so and exits 0
#   scripts/gpu-check.sh         build (when Go is here) then run
#
# The build tag is fedcuda, not cuda: under a tag named cuda Gorgonia's own
# files switch to its cuDNN engine in every package that imports package
# model, and do not build without cudnn.h.
#
# cuBLAS is loaded at run time (libcublas.so.13, .12 or .11): when the
# loader cannot find one, run looks for it in the Python packages (PyTorch
# wheels ship nvidia/cublas/lib) and in the usual CUDA folders, and adds its
# folder to LD_LIBRARY_PATH.
#
# Environment: GPU_CHECK_DIR, GO_TEST_FLAGS (extra flags for the test
# binaries, e.g. "-test.run Conformance"), GPU_CHECK_FORCE=1 (run even
# when no GPU is detected: the GPU tests then skip, the rest run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${GPU_CHECK_DIR:-bin/gpu-check}
case $out in /*) ;; *) out="$root/$out" ;; esac
mode=${1:-all}

# shellcheck source=scripts/gpu-lib.sh
. scripts/gpu-lib.sh

build() {
  if ! command -v go >/dev/null; then
    echo "gpu-check: go is not installed here: build the binaries on a machine with Go (scripts/gpu-check.sh build)" >&2
    exit 1
  fi
  if [ ! -f /usr/include/cuda.h ] && [ -z "${CGO_CFLAGS:-}" ]; then
    bash scripts/cuda-toolkit.sh # Debian's CUDA 11.8 toolkit, with cuda.h and libcuda.so
    if [ ! -f /usr/include/cuda.h ]; then
      echo "gpu-check: cuda.h is missing: install nvidia-cuda-dev (Debian non-free) or set CGO_CFLAGS/CGO_LDFLAGS" >&2
      exit 1
    fi
  fi
  mkdir -p "$out/ptx"
  echo "gpu-check: building into $out" >&2
  go test -c -tags fedcuda -ldflags='-s -w' -o "$out/cuda.test" ./kernels/cuda
  go test -c -tags fedcuda -ldflags='-s -w' -o "$out/cudadev.test" ./model/engine/cudadev
  go test -c -tags fedcuda -ldflags='-s -w' -o "$out/trainer.test" ./trainer
  go test -c -tags fedcuda -ldflags='-s -w' -o "$out/cli.test" ./internal/cli
  cp kernels/cuda/ptx/*.ptx "$out/ptx/"
  ls -l "$out" >&2
}

run() {
  for b in cuda.test cudadev.test trainer.test cli.test; do
    if [ ! -x "$out/$b" ]; then echo "gpu-check: $out/$b is missing: run scripts/gpu-check.sh build first" >&2; exit 1; fi
  done
  if ! have_gpu && [ "${GPU_CHECK_FORCE:-0}" != 1 ]; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi lists none): nothing run; the binaries are in $out" >&2
    return 0
  fi
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L || true; fi
  find_cublas
  local status=0
  # shellcheck disable=SC2086
  (cd kernels/cuda && "$out/cuda.test" -test.v -test.count=1 ${GO_TEST_FLAGS:-}) || status=1
  # shellcheck disable=SC2086
  (cd model/engine/cudadev && "$out/cudadev.test" -test.v -test.count=1 ${GO_TEST_FLAGS:-}) || status=1
  # shellcheck disable=SC2086
  (cd trainer && "$out/trainer.test" -test.count=1 -test.run 'Device|Backend|CUDA' -test.v ${GO_TEST_FLAGS:-}) || status=1
  # shellcheck disable=SC2086
  (cd internal/cli && "$out/cli.test" -test.count=1 -test.run 'CUDA|ParseDevice' -test.v ${GO_TEST_FLAGS:-}) || status=1
  if [ $status != 0 ]; then echo "gpu-check: FAILED" >&2; else echo "gpu-check: all passed" >&2; fi
  return $status
}

case $mode in
  build) build ;;
  run) run ;;
  all)
    if command -v go >/dev/null; then build; fi
    run
    ;;
  *) echo "usage: scripts/gpu-check.sh [build|run]" >&2; exit 2 ;;
esac

# shellcheck shell=bash
# gpu-lib.sh: helpers sourced by scripts/gpu-check.sh and scripts/bench-gpu.sh.

# have_gpu: is there an NVIDIA GPU with a driver?
have_gpu() {
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then return 0; fi
  [ -e /dev/nvidia0 ]
}

# find_cublas: make sure the dynamic loader can find a libcublas.so.1[123].
find_cublas() {
  if ldconfig -p 2>/dev/null | grep -Eq 'libcublas\.so\.1[123]'; then return 0; fi
  local dirs=() d py
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null || continue
    d=$("$py" -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null) || true
    [ -n "$d" ] && dirs+=("$d")
    d=$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) || true
    [ -n "$d" ] && dirs+=("$d")
  done
  dirs+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu)
  for d in "${dirs[@]}"; do
    if compgen -G "$d/libcublas.so.1[123]*" >/dev/null; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "gpu-check: cuBLAS from $d" >&2
      return 0
    fi
  done
  d=$(find / -xdev -name 'libcublas.so.1[123]*' -print -quit 2>/dev/null || true)
  if [ -n "$d" ]; then
    d=$(dirname "$d")
    export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "gpu-check: cuBLAS from $d" >&2
    return 0
  fi
  echo "gpu-check: warning: no libcublas.so.1[123] found; the matrix products will fail" >&2
}

#!/usr/bin/env bash
# Installs nvcc (Debian's nvidia-cuda-toolkit, CUDA 11.8 on bookworm) when it
# is missing, adding the contrib and non-free components to apt's sources
# first: `make kernels` runs it. Needs root and apt; elsewhere it says what
# to install and fails.
set -euo pipefail

if command -v nvcc >/dev/null; then
	exit 0
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
	echo "nvcc is missing: install the CUDA toolkit (Debian: nvidia-cuda-toolkit from contrib/non-free)" >&2
	exit 1
fi
if ! grep -rqsE '^(Components:|deb ).*\bnon-free\b' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	. /etc/os-release
	echo "adding contrib non-free to apt's sources (/etc/apt/sources.list.d/fedtune-cuda.sources)"
	cat >/etc/apt/sources.list.d/fedtune-cuda.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
echo "installing nvidia-cuda-toolkit (several GB)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nvidia-cuda-toolkit >/dev/null
command -v nvcc >/dev/null

#!/usr/bin/env bash
# Installs every Debian package fedloha needs to build, test and run, on a
# bare Debian 12 too (build-essential brings make; the tests need python3
# (stdlib json only) and procps (pgrep); make faults needs iproute2; OpenMPI
# builds fedloha-sim over MPI, and its mpirun needs an ssh client even for
# ranks on this machine only, so openssh-client is named too). Run it
# before the first `make` on a machine without make. Idempotent: packages
# already present are skipped; apt-get runs only when something is missing.
#   --with-torch      also the optional PyTorch reference (python3-torch), used
#                     to regenerate golden files and to check that saved models
#                     load in PyTorch
#   --with-clang      also clang, its sanitizer/fuzzer runtime and its OpenMP
#                     runtime (make clang, the libFuzzer targets of tests/fuzz/)
#   --with-container  also podman, runc, mmdebstrap and podman-compose, used by
#                     deploy/bare-debian-check.sh and deploy/compose.yaml
set -euo pipefail

pkgs=(build-essential cmake pkg-config
      libuv1-dev libprotobuf-c-dev protobuf-c-compiler libsodium-dev
      libopenblas-dev zlib1g-dev libjansson-dev
      dataset-fashion-mnist gnuplot-nox python3 procps iproute2
      openmpi-bin libopenmpi-dev openssh-client)
for arg in "$@"; do
  case "$arg" in
    --with-torch) pkgs+=(python3-torch python3-numpy) ;;
    --with-clang) pkgs+=(clang libclang-rt-14-dev libomp-14-dev) ;;
    --with-container)
      pkgs+=(podman runc mmdebstrap podman-compose uidmap
             containernetworking-plugins golang-github-containernetworking-plugin-dnsname) ;;
    -h|--help)
      echo "usage: deploy/install-deps.sh [--with-torch] [--with-clang] [--with-container]"
      echo "Installs the Debian packages fedloha needs (build, test, run)."
      echo "  --with-torch      also python3-torch (golden files, PyTorch checks)"
      echo "  --with-clang      also clang, libclang-rt-14-dev, libomp-14-dev (make clang)"
      echo "  --with-container  also podman, runc, mmdebstrap, podman-compose"
      echo "                    (deploy/bare-debian-check.sh, deploy/compose.yaml)"
      exit 0 ;;
    *) echo "install-deps.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: missing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
    echo "install-deps: not root, using sudo to run apt-get"
  else
    echo "install-deps: these packages must be installed by root:" >&2
    echo "  apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"

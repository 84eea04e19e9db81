#!/usr/bin/env bash
# setup.sh: install everything spotrun needs on Debian 12 and build it into
# build/. Safe to run again: packages already present are skipped, and the
# build is incremental.
#
#   scripts/setup.sh            packages for building, running and testing
#   scripts/setup.sh --bench    also the benchmark peers (PyTorch)
#   scripts/setup.sh --no-build packages only
set -euo pipefail

cd "$(dirname "$0")/.."

want_bench=0
build=1
for arg in "$@"; do
    case $arg in
    --bench) want_bench=1 ;;
    --no-build) build=0 ;;
    -h | --help)
        sed -n '2,9p' "$0"
        exit 0
        ;;
    *)
        echo "setup: unknown option $arg" >&2
        exit 2
        ;;
    esac
done

say() { printf 'setup: %s\n' "$*"; }

packages=(
    # build
    build-essential cmake pkg-config
    # libraries spotrun links
    openmpi-bin libopenmpi-dev libhdf5-dev hdf5-tools libcurl4-openssl-dev
    libssl-dev libxml2-dev libjansson-dev libopenblas-dev zlib1g-dev
    libisal-dev
    # tests and interop checks
    libcmocka-dev python3 python3-numpy python3-h5py python3-boto3 awscli
    ca-certificates curl iproute2 procps
    # spotrun launch: ssh between hosts (and the two-host launcher tests)
    openssh-client openssh-server
    # scripts/sweep (plots, YAML specs) and the Optuna example
    python3-matplotlib python3-yaml python3-optuna
    # the dataset of the main job
    dataset-fashion-mnist
)
((want_bench)) && packages+=(python3-torch)
# Node.js for the local S3 server: keep an existing node (e.g. NodeSource,
# which bundles npm); otherwise Debian's.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages (${missing[*]}); run as root" >&2
        exit 1
    fi
    say "installing ${#missing[@]} package(s): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "all ${#packages[@]} packages present"
fi

# the S3 test server (npm, pinned by its package-lock.json)
if [[ -f tests/s3server/package-lock.json ]]; then
    stamp=tests/s3server/node_modules/.package-lock.json
    if [[ ! -f $stamp || tests/s3server/package-lock.json -nt $stamp ]]; then
        say "installing the S3 test server (npm ci)"
        npm ci --prefix tests/s3server --no-audit --no-fund --loglevel=error >/dev/null
    else
        say "S3 test server present"
    fi
fi

if ((build)); then
    say "building in build/"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j"$(nproc)" -- --no-print-directory >/dev/null
    say "built build/spotrun"
fi

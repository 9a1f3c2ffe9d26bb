#!/usr/bin/env bash
# Download, here (where pip reaches PyPI), the wheels the GPU check needs on a machine without a package index:
# benchmarks/gpu_wheels.txt, for CPython 3.12 on x86-64 Linux, into .whl/ (git ignores it; the device call names it
# in `carry`). Pure-Python wheels, no dependencies fetched (--no-deps): the GPU machine's image has the rest.
#     benchmarks/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
ls -l .whl
du -sh .whl

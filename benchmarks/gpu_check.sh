#!/usr/bin/env bash
# The GPU check in one command, on a GPU machine with the wheels of benchmarks/gpu_wheels.txt carried in .whl/
# (benchmarks/fetch_gpu_wheels.sh fetches them):
#     benchmarks/gpu_check.sh "$OUT"              # or any output folder; options: benchmarks/gpu_check.py --help
# It runs benchmarks/gpu_check.py with the machine's python3 (the one with CUDA torch; $PYTHON overrides), never a
# virtual environment of this checkout. Its exit status is the driver's: 1 when an equality check failed.
set -u
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"

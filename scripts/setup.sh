#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the pinned stack into it.
# Idempotent: a second run with unchanged requirements does nothing. Used by `make`, CI and the Dockerfile.
#   PYTHON=python3.11 scripts/setup.sh      # choose the interpreter (3.11 or newer)
#   VENV=/opt/venv scripts/setup.sh         # install somewhere else (the Docker image does)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.treegrpo-installed"
want=$(cat requirements/*.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "treegrpo setup: installing the pinned stack into $VENV (first time: a few minutes, ~7 GB)" >&2
"${pip[@]}" install -q --upgrade "pip>=25"
"${pip[@]}" install -q -r requirements/base.txt -r requirements/dev.txt -c requirements/lock.txt
"${pip[@]}" install -q --no-deps -e .
# reward models: their own needs with dependencies, then hpsv2 and image-reward without (their pins break the stack)
"${pip[@]}" install -q -r requirements/rewards.txt -c requirements/lock.txt
"${pip[@]}" install -q --no-deps -r requirements/rewards-nodeps.txt
# hpsv2's wheel omits the CLIP BPE vocabulary its tokenizer opens on import; open_clip ships the same file
"$VENV/bin/python" - <<'PY'
import importlib.util, pathlib, shutil
src = pathlib.Path(importlib.util.find_spec("open_clip").submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
dst = pathlib.Path(importlib.util.find_spec("hpsv2").submodule_search_locations[0]) / "src/open_clip" / src.name
if not dst.is_file():
    shutil.copyfile(src, dst)
PY
echo "$want" > "$stamp"

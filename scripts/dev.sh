#!/usr/bin/env bash
set -euo pipefail
VENV=${HOTLOOP_VENV:-.venv}
PY=${PYTHON:-python3}

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

install_torch() {
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  if "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then return; fi
  if [ -n "${HOTLOOP_TORCH_SPEC:-}" ]; then
    "${pip[@]}" "$HOTLOOP_TORCH_SPEC"
  elif have_gpu; then
    echo "[hotloop] NVIDIA GPU found: installing the default (CUDA) torch build"
    "${pip[@]}" "torch>=2.1"
  elif compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    echo "[hotloop] no GPU: installing the CPU build of torch 2.13.0 found on this machine"
    "${pip[@]}" "torch==2.13.0"
  else
    echo "[hotloop] no GPU: installing the CPU build of torch from download.pytorch.org"
    "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
  fi
}

setup() {
  local stamp="$VENV/.hotloop-setup"
  local want
  want=$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  install_torch
  echo "[hotloop] installing hotloop (editable) with its test and bench extras"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,bench]"
  echo "$want" >"$stamp"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    "$VENV/bin/python" -m hotloop demo "$@"
    ;;
  bench)
    setup
    "$VENV/bin/python" -m hotloop.bench.compare "$@"
    ;;
  gpu | gpu-wheels)
    # The GPU check (scripts/gpu.py, docs/gpu.md). No set-up on a GPU machine: it runs on the machine's own python,
    # which has torch and the build tools and may have no network; the dry run runs in .venv, set up as usual.
    if [ "$cmd" = gpu ] && [[ " $* " == *" --dry-run "* ]]; then setup; fi
    gpu_py=$PY
    if [ -x "$VENV/bin/python" ]; then gpu_py=$VENV/bin/python; fi
    exec "$gpu_py" scripts/gpu.py "$cmd" "$@"
    ;;
  test)
    setup
    echo "[hotloop] ruff"
    "$VENV/bin/ruff" check src tests benchmarks examples
    "$VENV/bin/ruff" format --check src tests benchmarks examples
    echo "[hotloop] mypy"
    "$VENV/bin/mypy"
    echo "[hotloop] pytest"
    "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev {demo|bench|test|setup|gpu|gpu-wheels} [args...]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# What ./dev runs. The set-up is one function per stage, each printing one line; pip prints its own progress.
set -euo pipefail
VENV=${HOTLOOP_VENV:-.venv}
PY=${PYTHON:-python3}
# The torch release of the README's measurements, installed as its CPU build where there is no NVIDIA GPU.
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

USAGE="usage: ./dev COMMAND [args...]

commands:
  demo [options]       set up .venv (first time only) and run 'hotloop demo' (its options: ./dev demo --help)
  bench [options]      set up .venv (first time only) and run 'hotloop bench' (its options: ./dev bench --help)
  test [pytest-args]   set up .venv for the tests (first time only), then ruff, mypy and pytest (what CI runs)
  setup [demo|test]    only set up .venv: for the demo and the benchmark, or (the default) for the tests
  gpu [--out DIR]      on a machine with CUDA: the GPU tests and benchmark, a report in DIR (docs/gpu.md);
                       --dry-run runs the same plumbing on the CPU (in .venv, set up for the tests)
  gpu-wheels           download the wheels a GPU machine lacks into .whl/ (docs/gpu.md)
  help                 this text

The set-up makes a virtual environment in \$HOTLOOP_VENV (default .venv) with torch $TORCH_VERSION (its CPU build where
no NVIDIA GPU is present; HOTLOOP_TORCH_SPEC='torch==X ...' picks another) and hotloop in editable mode with the
extras a command needs: [bench,dali] for demo and bench, [test] for test. It is redone when pyproject.toml or this
script changes."

say() { echo "[hotloop] $*"; }

pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check "$@"; }

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# The extras a set-up profile installs: demo and bench get what the demo and the benchmark use, DALI included (the
# demo's loader), not the test-only GPU builds (triton, about 1 GB); test gets everything the tests need.
extras_for() {
  case "$1" in
    test) echo "test" ;;
    *) echo "bench,dali" ;;
  esac
}

# Whether `pip install torch==$TORCH_VERSION` already gives a CPU-only build here: a "+cpu" release that pip's own
# configuration finds (a local index or wheel folder), or any platform other than Linux, where PyPI's torch has no
# CUDA. On Linux, PyPI's default build is the CUDA one (with about 3 GB of CUDA libraries).
torch_resolves_to_cpu_build() {
  local version
  version=$("$VENV/bin/python" -m pip install --dry-run --no-deps --ignore-installed --quiet --report - \
    "torch==$TORCH_VERSION" 2>/dev/null |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
      2>/dev/null) || return 1
  [[ "$version" == *+cpu ]] || [ "$(uname -s)" != Linux ]
}

stage_venv() {
  if [ -x "$VENV/bin/python" ]; then
    say "set-up 1/3: virtual environment $VENV exists ($("$VENV/bin/python" --version))"
    return
  fi
  say "set-up 1/3: creating the virtual environment $VENV ($("$PY" --version))"
  "$PY" -m venv "$VENV"
}

stage_torch() {
  local installed
  if installed=$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null); then
    say "set-up 2/3: torch $installed is installed"
  elif [ -n "${HOTLOOP_TORCH_SPEC:-}" ]; then
    say "set-up 2/3: torch as HOTLOOP_TORCH_SPEC says: $HOTLOOP_TORCH_SPEC"
    # shellcheck disable=SC2086 # the spec may carry options (--index-url URL)
    pip_install $HOTLOOP_TORCH_SPEC
  elif have_gpu; then
    say "set-up 2/3: NVIDIA GPU found: torch, its default (CUDA) build"
    pip_install "torch>=2.1"
  elif torch_resolves_to_cpu_build; then
    say "set-up 2/3: no NVIDIA GPU: torch $TORCH_VERSION, CPU build"
    pip_install "torch==$TORCH_VERSION"
  else
    say "set-up 2/3: no NVIDIA GPU: torch $TORCH_VERSION, CPU build, from $TORCH_CPU_INDEX"
    pip_install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
  fi
}

stage_hotloop() {
  say "set-up 3/3: hotloop, editable (building its C++ module), with the extras [$1]"
  pip_install -e ".[$1]"
}

# The stamp holds the hash of what the set-up depends on and the profile it installed; test's covers demo's.
setup_is_current() {
  local stamp=$1 want=$2 profile=$3 hash done_profile
  [ -f "$stamp" ] && read -r hash done_profile <"$stamp" || return 1
  [ "$hash" = "$want" ] && { [ "$done_profile" = "$profile" ] || [ "$done_profile" = test ]; }
}

setup() {
  local profile=$1 stamp="$VENV/.hotloop-setup" want started=$SECONDS
  want=$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)
  if setup_is_current "$stamp" "$want" "$profile"; then return; fi
  say "setting up $VENV for '$profile' (first time: several minutes and a few GB, see the README's Install section)"
  stage_venv
  stage_torch
  stage_hotloop "$(extras_for "$profile")"
  echo "$want $profile" >"$stamp"
  say "set-up done in $((SECONDS - started)) s; $VENV takes $(du -sh "$VENV" | cut -f1)"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup)
    profile=${1:-test}
    case "$profile" in
      demo | test) setup "$profile" ;;
      *)
        echo "./dev setup: unknown profile '$profile' (expected demo or test)" >&2
        exit 2
        ;;
    esac
    ;;
  demo)
    setup demo
    "$VENV/bin/python" -m hotloop demo "$@"
    ;;
  bench)
    setup demo
    "$VENV/bin/python" -m hotloop bench "$@"
    ;;
  gpu | gpu-wheels)
    # The GPU check (scripts/gpu.py, docs/gpu.md). No set-up on a GPU machine: it runs on the machine's own python,
    # which has torch and the build tools and may have no network; the dry run runs in .venv, set up as usual.
    if [ "$cmd" = gpu ] && [[ " $* " == *" --dry-run "* ]]; then setup test; fi
    gpu_py=$PY
    if [ -x "$VENV/bin/python" ]; then gpu_py=$VENV/bin/python; fi
    exec "$gpu_py" scripts/gpu.py "$cmd" "$@"
    ;;
  test)
    setup test
    echo "[hotloop] ruff"
    "$VENV/bin/ruff" check src tests benchmarks examples scripts
    "$VENV/bin/ruff" format --check src tests benchmarks examples scripts
    echo "[hotloop] mypy"
    "$VENV/bin/mypy"
    echo "[hotloop] pytest"
    "$VENV/bin/python" -m pytest "$@"
    ;;
  help | -h | --help)
    echo "$USAGE"
    ;;
  *)
    echo "./dev: unknown command '$cmd'" >&2
    echo "$USAGE" >&2
    exit 2
    ;;
esac

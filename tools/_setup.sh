# Shared set-up steps for tools/test and tools/demo. Sourced, not run.
#
# Venvs live in $VENVS (default .venvs inside the clone; gitignored). Each venv carries a stamp: a hash of
# the requirement files it was built from and of the Python version. A matching stamp means "nothing to do",
# so reruns are fast. A missing or stale stamp means `pip install` into the existing venv (pip itself then
# checks what is already satisfied and installs only the difference), followed by `pip check`; the venv is
# only created from scratch when it has no working interpreter. Nothing here ever deletes a working venv.

MECHA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENVS=${VENVS:-$MECHA_ROOT/.venvs}
PYTHON=${PYTHON:-python3}
REQ=$MECHA_ROOT/requirements

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
export GRADIO_ANALYTICS_ENABLED=False
export DEBIAN_FRONTEND=noninteractive

log() { printf '== [%4ss] %s\n' "$SECONDS" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Test-only oracles of one stack, when it has some: requirements/oracles-<name>.txt.
stack_oracles() {  # name
  [ -f "$REQ/oracles-$1.txt" ] && echo "$REQ/oracles-$1.txt"
  return 0
}

# A venv's identity: the Python that builds it and the requirement files it is built from.
venv_stamp() {  # name
  { "$PYTHON" --version 2>&1; cat "$REQ/ci-$1.txt" "$REQ/oracles.txt" $(stack_oracles "$1") "$REQ/constraints.txt"; } \
    | sha256sum | cut -c1-16
}

# Run apt-get as root or through sudo; one `apt-get update` per process.
_APT_UPDATED=0
apt_install() {  # package...
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  if [ "$_APT_UPDATED" = 0 ]; then $sudo apt-get update -qq; _APT_UPDATED=1; fi
  $sudo apt-get install -y -qq --no-install-recommends "$@"
}

check_python() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
    || die "$PYTHON is missing or older than 3.10 (set PYTHON=/path/to/python3.10+)"
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv (Debian ships venv without ensurepip)"
    apt_install python3-venv
  fi
}

# Build or refresh one venv. Prints pip's output; the caller redirects it to a log.
ensure_venv() {  # name
  local name=$1 v="$VENVS/$1" stamp
  stamp=$(venv_stamp "$name")
  if [ "$(cat "$v/.mecha-stamp" 2>/dev/null)" = "$stamp" ] && "$v/bin/python" -c '' 2>/dev/null; then
    echo "venv $name: up to date (stamp $stamp; $(cat "$v/.mecha-torch" 2>/dev/null || echo "torch: not recorded"))"
    return 0
  fi
  if ! "$v/bin/python" -c '' 2>/dev/null; then
    echo "venv $name: creating $v"
    rm -rf "$v"
    "$PYTHON" -m venv "$v" || return 1
  fi
  # torch==2.13.0 as the index serves it (constraints.txt keeps it, and numpy, where the stack put them);
  # pip's installation reports say which torch came from where
  rm -f "$v"/.mecha-pip-report-*.json
  "$v/bin/python" -m pip install -r "$REQ/ci-$name.txt" -c "$REQ/constraints.txt" \
    --report "$v/.mecha-pip-report-stack.json" || return 1
  "$v/bin/python" -m pip install -r "$REQ/oracles.txt" -c "$REQ/constraints.txt" \
    --report "$v/.mecha-pip-report-oracles.json" || return 1
  local extra
  extra=$(stack_oracles "$name")
  if [ -n "$extra" ]; then
    "$v/bin/python" -m pip install -r "$extra" -c "$REQ/constraints.txt" \
      --report "$v/.mecha-pip-report-stack-oracles.json" || return 1
  fi
  "$v/bin/python" -m pip check || return 1
  describe_torch "$v" > "$v/.mecha-torch"
  echo "$stamp" > "$v/.mecha-stamp"
  echo "venv $name: ready (stamp $stamp; $(cat "$v/.mecha-torch" 2>/dev/null))"
}

# "torch VERSION, its build, from WHERE" for the venv $1: the version and build from the installed
# package's metadata (a CUDA build requires nvidia-* packages), the source from pip's reports of the
# last install (a local wheel, the package index...); "already installed" when that install kept it.
describe_torch() {  # venv
  "$1/bin/python" - "$1"/.mecha-pip-report-*.json <<'PY' 2>/dev/null || echo "torch: unknown"
import json, sys
from importlib.metadata import requires, version

source = "already installed"
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        continue
    for item in report.get("install", []):
        if item["metadata"]["name"].lower() == "torch":
            source = "from " + item["download_info"]["url"]
cuda = any(r.startswith("nvidia-") for r in requires("torch") or [])
print(f"torch {version('torch')}, {'CUDA build (with nvidia-* packages)' if cuda else 'CPU build'}, {source}")
PY
}

#!/usr/bin/env bash
# Installs what building and testing pgmlcat needs on a fresh Debian 12
# machine, and nothing that is already there. Safe to run again.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
need=()
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pgbench" ]] || need+=(postgresql-15)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the TLS tests make certificates
# lightgbm3's build: bindgen needs libclang, LightGBM's C++ needs OpenMP.
[[ -e /usr/lib/llvm-14/lib/libclang.so || -n $(ls /usr/lib/llvm-*/lib/libclang*.so 2>/dev/null) ]] || need+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need+=(python3-pip)
# Integration tests drive pgmlcat with psycopg 3 too, as applications do,
# from PGMLCAT_PYTHON (default python3; where a pyenv python3 comes first on
# PATH without Debian's python3-psycopg, set it to /usr/bin/python3).
PGMLCAT_PYTHON=${PGMLCAT_PYTHON:-python3}
"$PGMLCAT_PYTHON" -c 'import psycopg' >/dev/null 2>&1 || need+=(python3-psycopg)
"$PGMLCAT_PYTHON" -c 'import asyncpg' >/dev/null 2>&1 || need+=(python3-asyncpg)
# ... and with pgJDBC (Java), pgx v4 and lib/pq (Go), compiled offline by the tests.
command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1 || need+=(default-jdk-headless)
[[ -e /usr/share/java/postgresql.jar ]] || need+=(libpostgresql-jdbc-java)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[[ -e /usr/share/gocode/src/github.com/jackc/pgx/v4/conn.go ]] || need+=(golang-github-jackc-pgx-v4-dev)
[[ -e /usr/share/gocode/src/github.com/lib/pq/conn.go ]] || need+=(golang-github-lib-pq-dev)
# ... and with node-postgres (npm's pg, pinned by tests/it/clients/node's
# package-lock.json and installed there below).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# The dashboard test (tests/it/dashboard.rs) renders its pages in headless
# Chromium; installed without its recommends (no sandbox helper, which
# --no-sandbox does without, nor desktop extras).
bare=()
[[ -x /usr/bin/chromium ]] || bare+=(chromium)

if ((${#need[@]} + ${#bare[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${need[*]} ${bare[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]} ${bare[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ((${#need[@]})); then
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ((${#bare[@]})); then
    apt-get install -y -qq --no-install-recommends "${bare[@]}" >/dev/null
  fi
fi
# LightGBM needs CMake >= 3.28 and Debian 12 has 3.25: a pip wheel of CMake
# goes into .tools/, where .cargo/config.toml points the CMAKE variable.
root=$(cd "$(dirname "$0")/.." && pwd)
cmake_bin="$root/.tools/cmake/cmake/data/bin/cmake"
if [[ ! -x $cmake_bin ]]; then
  echo "setup: installing CMake >= 3.28 into .tools/cmake" >&2
  pip=$(command -v pip3 || command -v pip)
  "$pip" install -q --disable-pip-version-check --target "$root/.tools/cmake" 'cmake>=3.28,<4' >&2
fi
"$cmake_bin" --version >/dev/null
# The ML tests check pgmlcat against references computed without it
# (tests/reference/*.py): numpy, Python's lightgbm, scikit-learn's metrics,
# and models trained by lightgbm and xgboost to import. The tests put
# .tools/py first on PYTHONPATH, where these wheels go when the system
# Python lacks them. LightGBM 4.7 is the version lightgbm3-sys builds;
# xgboost-cpu is XGBoost without its CUDA libraries.
py_dir="$root/.tools/py"
py_check='import lightgbm, numpy, sklearn, xgboost'
if ! PYTHONPATH="$py_dir${PYTHONPATH:+:$PYTHONPATH}" "$PGMLCAT_PYTHON" -c "$py_check" >/dev/null 2>&1; then
  echo "setup: installing numpy, lightgbm, scikit-learn and xgboost into .tools/py" >&2
  pip=$(command -v pip3 || command -v pip)
  "$pip" install -q --disable-pip-version-check --target "$py_dir" numpy 'lightgbm==4.7.*' \
    'scikit-learn==1.*' 'xgboost-cpu==3.*' >&2
fi
PYTHONPATH="$py_dir${PYTHONPATH:+:$PYTHONPATH}" "$PGMLCAT_PYTHON" -c "$py_check"

node_dir="$root/tests/it/clients/node"
if [[ ! -e $node_dir/node_modules/pg/package.json ]]; then
  echo "setup: installing node-postgres into tests/it/clients/node" >&2
  npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

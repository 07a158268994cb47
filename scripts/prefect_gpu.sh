#!/usr/bin/env bash
# The Prefect side of a GPU host, in order (docs/gpu.md, "GPU pools"). Run from anywhere; it works in this clone.
#   scripts/prefect_gpu.sh server    # a Prefect server on 127.0.0.1:$PREFECT_PORT (default 4200), foreground
#   scripts/prefect_gpu.sh pool      # the `process` work pool $TREEGRPO_POOL (default gpu), concurrency 1
#   scripts/prefect_gpu.sh deploy    # the deployment $DEPLOYMENT (default train) from prefect.yaml
#   scripts/prefect_gpu.sh worker    # a worker for the pool, foreground (extra arguments go to it: --run-once)
#   scripts/prefect_gpu.sh up        # all four on one machine: the server in the background, then the rest
# With a server elsewhere, set PREFECT_API_URL (http://HOST:4200/api) and skip `server`.
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's environment (scripts/setup.sh) first on PATH, when there is one
if [ -d "${VENV:-.venv}/bin" ]; then
  PATH="$(cd "${VENV:-.venv}/bin" && pwd):$PATH"
  export PATH
fi
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
PORT=${PREFECT_PORT:-4200}
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:$PORT/api}
POOL=${TREEGRPO_POOL:-gpu}

wait_for_server() {
  python - "$PREFECT_API_URL" <<'PY'
import sys, time, urllib.request
url = sys.argv[1].rstrip("/") + "/health"
for _ in range(120):
    try:
        urllib.request.urlopen(url, timeout=2).read()
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(f"no Prefect server answered at {url} within 120 s")
PY
}

case "${1:-}" in
  server)
    exec prefect server start --host 127.0.0.1 --port "$PORT" ;;
  pool)
    wait_for_server
    prefect work-pool inspect "$POOL" >/dev/null 2>&1 || prefect work-pool create "$POOL" --type process
    prefect work-pool set-concurrency-limit "$POOL" "${POOL_CONCURRENCY:-1}" ;;
  deploy)
    wait_for_server
    prefect --no-prompt deploy --name "${DEPLOYMENT:-train}" ;;
  worker)
    wait_for_server
    exec prefect worker start --pool "$POOL" --type process "${@:2}" ;;
  up)
    log="${PREFECT_HOME:-$HOME/.prefect}/server.log"
    mkdir -p "$(dirname "$log")"
    "$0" server >"$log" 2>&1 &
    echo "Prefect server: pid $!, log $log, UI http://127.0.0.1:$PORT" >&2
    "$0" pool
    "$0" deploy
    exec "$0" worker ;;
  *)
    sed -n '2,8p' "$0" >&2
    exit 2 ;;
esac

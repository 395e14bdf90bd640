# shellcheck shell=bash
# Environment of the local Airflow 3.3.2 stack (scripts/airflow_stack.sh): source it, or print it with
# `scripts/airflow_stack.sh env`. Every Airflow setting is an AIRFLOW__* variable computed from the
# AF_* knobs below, so re-sourcing after changing a knob (e.g. AF_PORT) gives a consistent set.
#
# Knobs (set them before sourcing / before running the stack script):
#   AF_VENV            Airflow's own venv              (default <repo>/.airflow/venv)
#   AIRFLOW_HOME       DB, logs, pid files, bytecode   (default <repo>/.airflow/home)
#   AF_PORT            api-server port on 127.0.0.1    (default 8080)
#   AF_REDIS_PORT      Redis port on 127.0.0.1         (default 6379)
#   AF_BROKER          redis or sqlite                 (default redis if Redis answers on
#                      AF_REDIS_PORT or redis-server is installed, else sqlite)
#   AF_BROKER_URL      Celery broker                   (default redis://127.0.0.1:$AF_REDIS_PORT/0;
#                      AF_BROKER=sqlite: sqla+sqlite:///$AIRFLOW_HOME/celery-broker.db, kombu's
#                      SQLAlchemy transport, no Redis at all)
#   AF_RESULT_BACKEND  Celery result backend           (default redis://127.0.0.1:$AF_REDIS_PORT/1;
#                      AF_BROKER=sqlite: file://$AIRFLOW_HOME/celery-results, a directory)
#   AF_DAGS_FOLDER     DAG files                       (default <repo>/bundles/dags)
#   AF_PYTHON          interpreter for the venv        (default 3.11)
#   AF_LOG_SERVER_PORT [logging] worker_log_server_port: where the api-server fetches live task logs
#                      from http://<TI hostname>:<port>/log/ (default 8793)
#   AF_S3=1            a local S3 (scripts/s3_server.sh, moto) on 127.0.0.1:$AF_S3_PORT (default 5055)
#                      with bucket $AF_S3_BUCKET (default "airflow"), the amazon provider in the venv,
#                      and Airflow connection $AF_S3_CONN_ID (default "aws_local", env AIRFLOW_CONN_*)
#   AF_REMOTE_LOGGING=1  task logs also go to s3://$AF_S3_BUCKET/logs ([logging] remote_*); implies AF_S3=1
#   AF_XCOM_OBJECTSTORAGE=1  large XComs in s3://$AF_S3_BUCKET/xcom (common-io backend); implies AF_S3=1
#                      AF_XCOM_THRESHOLD (bytes, default 1024), AF_XCOM_COMPRESSION (default none)

# The repo is found from this file's location, never from the caller's directory.
AF_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AF_REPO

export AF_AIRFLOW_VERSION=3.3.2
export AF_PYTHON="${AF_PYTHON:-3.11}"
export AF_VENV="${AF_VENV:-$AF_REPO/.airflow/venv}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$AF_REPO/.airflow/home}"
export AF_RUN_DIR="$AIRFLOW_HOME/run"
export AF_HOST=127.0.0.1            # everything binds to loopback only; not a knob on purpose
export AF_PORT="${AF_PORT:-8080}"
export AF_API_URL="http://$AF_HOST:$AF_PORT"
export AF_REDIS_PORT="${AF_REDIS_PORT:-6379}"
# The embedded broker (AF_BROKER=sqlite) needs nothing running: kombu's SQLAlchemy transport on its
# own SQLite file (not airflow.db: every consumer polls it each second and would contend with the
# scheduler for airflow.db's write lock). Results go to Celery's file-system backend, not db+sqlite:
# Celery 5.7 changed the database backend's row format (JSON in a BLOB, was a pickle), so a
# `supervisor serve` with Celery 5.7 writes rows that Airflow's Celery 5.6 cannot read; the files
# hold the same JSON as Redis keys, which every Celery 5 reads.
if [[ -z ${AF_BROKER:-} ]]; then
  if command -v redis-server >/dev/null || (exec 3<>"/dev/tcp/$AF_HOST/$AF_REDIS_PORT") 2>/dev/null; then
    AF_BROKER=redis
  else
    AF_BROKER=sqlite
  fi
fi
export AF_BROKER
case $AF_BROKER in
  redis)
    export AF_BROKER_URL="${AF_BROKER_URL:-redis://$AF_HOST:$AF_REDIS_PORT/0}"
    export AF_RESULT_BACKEND="${AF_RESULT_BACKEND:-redis://$AF_HOST:$AF_REDIS_PORT/1}" ;;
  sqlite)
    export AF_BROKER_URL="${AF_BROKER_URL:-sqla+sqlite:///$AIRFLOW_HOME/celery-broker.db}"
    export AF_RESULT_BACKEND="${AF_RESULT_BACKEND:-file://$AIRFLOW_HOME/celery-results}" ;;
  *) echo "airflow_env.sh: AF_BROKER must be redis or sqlite, not '$AF_BROKER'" >&2; return 1 ;;
esac
# DAG files are read in place from the repo (not copied): an edit is picked up by the dag-processor
# within REFRESH_INTERVAL, there is no stale copy to forget, and dag_rel_path in the Celery workload
# is the path relative to bundles/dags.
export AF_DAGS_FOLDER="${AF_DAGS_FOLDER:-$AF_REPO/bundles/dags}"

# --- core, DB, executor
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export AIRFLOW__CELERY__BROKER_URL="$AF_BROKER_URL"
export AIRFLOW__CELERY__RESULT_BACKEND="$AF_RESULT_BACKEND"
# Airflow's default for Redis, set explicitly to document it and silence the scheduler's warning: an
# unacked message older than this is delivered again (reference §3.6). Not for the SQLAlchemy
# transport: it hands every transport option to create_engine(), which rejects unknown ones.
if [[ $AF_BROKER_URL != sqla+* && $AF_BROKER_URL != sqlalchemy+* ]]; then
  export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=86400
else
  unset AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT
fi
export AIRFLOW__CORE__DAGS_FOLDER="$AF_DAGS_FOLDER"
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="$AIRFLOW_HOME/logs"
export AF_LOG_SERVER_PORT="${AF_LOG_SERVER_PORT:-8793}"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$AF_LOG_SERVER_PORT"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Fixed so that connection passwords stay readable across restarts of a kept AIRFLOW_HOME.
export AIRFLOW__CORE__FERNET_KEY=No7V3itLJr_pTv0wFIsyj3spuHh0F9-ulv3VSHlZ584=

# --- API server, auth, tokens (test-only secrets: this stack binds to 127.0.0.1 and holds no real data)
export AIRFLOW__API__HOST="$AF_HOST"
export AIRFLOW__API__PORT="$AF_PORT"
export AIRFLOW__API__BASE_URL="$AF_API_URL"
# One uvicorn worker is plenty for tests and keeps ~250 MB per extra worker off a 2-core box.
export AIRFLOW__API__WORKERS=1
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AF_API_URL/execution/"
# The scheduler signs workload tokens with it and the api-server checks them: it must be the same in
# every process, so it is fixed (>= 64 bytes, or PyJWT warns about HS512 key length; pitfall P3).
export AIRFLOW__API_AUTH__JWT_SECRET=e2e-only-jwt-secret-6476f89b53226b38ab147bd7b5ea6c4781ca132ca2688a299b82d59b2585a537455c168dedf1d9afe4f0569f1b0afed5
# Signs the worker log-server JWT; fixed for the same reason.
export AIRFLOW__API__SECRET_KEY=e2e-only-secret-key-2835e1a484827a6d302147cf26b6e70c29417dc573fa1045
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
# The public API needs no token: a middleware injects an admin one.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True

# --- speed for tests
# Default 300 s: a new DAG file could take 5 minutes to appear (P4).
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
# No stale-bundle cleanup helper process in the worker (~120 MB); we use one unversioned bundle.
export AIRFLOW__DAG_PROCESSOR__STALE_BUNDLE_CLEANUP_INTERVAL=0
# Airflow's worker can hold a pool slot up to min_heartbeat_interval after a task ends (P8).
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1

# --- bytecode (P1): the machine exports PYTHONDONTWRITEBYTECODE=1 and uv venvs ship no .pyc, so each
# Airflow process (and each task child) would compile ~5,000 modules from source on every start.
# Keep the bytecode in a cache outside the venv; the stack script pre-fills it once.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$AIRFLOW_HOME/pycache"

# --- local S3 and remote logging (opt-in: AF_S3=1, AF_REMOTE_LOGGING=1); `up` starts the S3 server
export AF_REMOTE_LOGGING="${AF_REMOTE_LOGGING:-0}"
if [[ $AF_REMOTE_LOGGING == 1 ]]; then AF_S3=1; fi
if [[ ${AF_XCOM_OBJECTSTORAGE:-0} == 1 ]]; then AF_S3=1; fi
export AF_S3="${AF_S3:-0}"
if [[ $AF_S3 == 1 ]]; then
  export AF_S3_PORT="${AF_S3_PORT:-5055}"
  export AF_S3_ENDPOINT="http://$AF_HOST:$AF_S3_PORT"
  export AF_S3_BUCKET="${AF_S3_BUCKET:-airflow}"
  export AF_S3_CONN_ID="${AF_S3_CONN_ID:-aws_local}"
  # moto accepts any credentials; botocore insists on some. The api-server serves this connection to
  # workers through the Execution API like any other (env connections are a secrets backend).
  export "AIRFLOW_CONN_${AF_S3_CONN_ID^^}={\"conn_type\": \"aws\", \"login\": \"testing\", \"password\": \"testing-secret\", \"extra\": {\"endpoint_url\": \"$AF_S3_ENDPOINT\", \"region_name\": \"us-east-1\"}}"
fi
if [[ $AF_REMOTE_LOGGING == 1 ]]; then
  export AIRFLOW__LOGGING__REMOTE_LOGGING=True
  export AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER="s3://$AF_S3_BUCKET/logs"
  export AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID="$AF_S3_CONN_ID"
else
  unset AIRFLOW__LOGGING__REMOTE_LOGGING AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID
fi
# --- XComs through S3 (opt-in: AF_XCOM_OBJECTSTORAGE=1, implies AF_S3=1): Airflow's common-io
# XComObjectStorageBackend for Python tasks, the same settings for `supervisor serve`. Values of at
# least AF_XCOM_THRESHOLD bytes of JSON (default 1024) go to s3://$AF_S3_BUCKET/xcom, compressed
# with AF_XCOM_COMPRESSION (gzip, bz2, zip, lzma, xz; default none).
export AF_XCOM_OBJECTSTORAGE="${AF_XCOM_OBJECTSTORAGE:-0}"
if [[ $AF_XCOM_OBJECTSTORAGE == 1 ]]; then
  export AIRFLOW__CORE__XCOM_BACKEND=airflow.providers.common.io.xcom.backend.XComObjectStorageBackend
  export AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH="s3://$AF_S3_CONN_ID@$AF_S3_BUCKET/xcom"
  export AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD="${AF_XCOM_THRESHOLD:-1024}"
  export AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION="${AF_XCOM_COMPRESSION:-}"
else
  unset AIRFLOW__CORE__XCOM_BACKEND AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH \
    AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION
fi

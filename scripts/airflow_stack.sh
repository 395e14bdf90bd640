#!/usr/bin/env bash
# A real Apache Airflow 3.3.2 for e2e tests and the demo: Redis broker (or, AF_BROKER=sqlite, an
# embedded one in SQLite files), CeleryExecutor, SQLite, api-server + scheduler + dag-processor +
# triggerer, optionally Airflow's own Celery worker.
# Everything binds to 127.0.0.1. Configuration: scripts/airflow_env.sh (AIRFLOW__* variables).
#
#   scripts/airflow_stack.sh up        install if needed, start what is not running, wait until ready
#   scripts/airflow_stack.sh down      stop everything this script started (by saved pid), TERM then KILL
#   scripts/airflow_stack.sh status    components, health; exit 0 only if the stack is up and healthy
#   scripts/airflow_stack.sh env       print the environment: eval "$(scripts/airflow_stack.sh env)"
#   scripts/airflow_stack.sh airflow … run the venv's airflow CLI with that environment
#
# Knobs for `up` (besides those in airflow_env.sh):
#   AF_WORKER=1 (or `up --worker`)  also start `airflow celery worker` on AF_WORKER_QUEUES (default
#                 "default"). Never give it the "bundles" queue: it would pick up @task.stub tasks and
#                 fail them (pitfall P6).
#   AF_WORKER_CONCURRENCY           default 2
#   AF_UP_TIMEOUT                   seconds to wait for health and for the DAG files (default 180)
#   AF_STOP_TIMEOUT                 seconds between TERM and KILL in `down` (default 15)
#   AF_S3=1, AF_REMOTE_LOGGING=1    local S3 and remote task logs (airflow_env.sh): `up` installs the
#                 amazon provider, starts scripts/s3_server.sh (stopped by `down` if `up` started it)
#                 and creates the bucket. Components already running keep their settings: `down`
#                 first to change these.
#   AF_XCOM_OBJECTSTORAGE=1         large XComs in that S3 through Airflow's common-io backend
#                 (airflow_env.sh: AF_XCOM_THRESHOLD, AF_XCOM_COMPRESSION); implies AF_S3=1.
#
# Each component runs under `setsid`, so its pid is also its process-group id; `down` signals the
# group and, because task processes leave the group (setpgid, P10), every descendant found at stop
# time as well. Pid files and logs: $AIRFLOW_HOME/run/<component>.{pid,log}.
set -Eeuo pipefail
# Anything that fails without its own message still ends with one clear line.
trap 'die "unexpected failure (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# shellcheck source-path=SCRIPTDIR
# shellcheck source=airflow_env.sh
. "$(dirname "${BASH_SOURCE[0]}")/airflow_env.sh" || exit 2   # it said why (a bad AF_BROKER)

RUN="$AF_RUN_DIR"
AIRFLOW_BIN="$AF_VENV/bin/airflow"
AF_WORKER="${AF_WORKER:-0}"
AF_WORKER_QUEUES="${AF_WORKER_QUEUES:-default}"
AF_WORKER_CONCURRENCY="${AF_WORKER_CONCURRENCY:-2}"
AF_UP_TIMEOUT="${AF_UP_TIMEOUT:-180}"
AF_STOP_TIMEOUT="${AF_STOP_TIMEOUT:-15}"
INSTALL_SPEC="apache-airflow[celery]==$AF_AIRFLOW_VERSION"
# [s3fs]: ObjectStoragePath on s3:// (the common-io XCom backend, AF_XCOM_OBJECTSTORAGE=1) needs it.
AMAZON_SPEC="apache-airflow-providers-amazon[s3fs]==9.39.0"
declare -A STARTED_AT=()   # component -> epoch seconds, for those started by this invocation
# Health-endpoint key -> component name, for the components that report to /monitor/health.
declare -A HEALTH_OF=([metadatabase]=api-server [scheduler]=scheduler [dag_processor]=dag-processor
                      [triggerer]=triggerer)

T0=${EPOCHREALTIME/./}
fmt_us() { printf '%d.%d' $(($1 / 1000000)) $(($1 / 100000 % 10)); }   # microseconds -> "1.2"
elapsed() { fmt_us $((${EPOCHREALTIME/./} - T0)); }
say() { printf 'airflow_stack [+%ss] %s\n' "$(elapsed)" "$*"; }
die() { printf 'airflow_stack FAILED: %s\n' "$*" >&2; exit 1; }
# A tiny JSON helper with the venv's interpreter (no jq on the machine): pyjson '<code using d>' < json.
# sys.argv[1:] holds the health keys.
pyjson() { "$AF_VENV/bin/python" -c "import json,sys; d=json.load(sys.stdin); $1" "${!HEALTH_OF[@]}"; }

# ------------------------------------------------------------------------------------------ processes

# start_time <pid>: the kernel's start time of a process (field 22 of /proc/<pid>/stat).
start_time() { local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; stat=${stat##*) }; cut -d' ' -f20 <<<"$stat"; }

# pid_of <name>: the saved pid if that process is still alive and is still the one we started (same
# start time, so a recycled pid is never signalled), else nothing.
pid_of() {
  local pidf="$RUN/$1.pid" pid started
  [[ -s $pidf ]] || return 1
  read -r pid started <"$pidf" || true
  [[ -n ${started:-} && "$(start_time "$pid")" == "$started" ]] || return 1
  echo "$pid"
}

# start_process <name> <cmd...>: run detached in its own session; pid file + appended log.
start_process() {
  local name=$1; shift
  local log="$RUN/$name.log"
  printf '\n===== %s starting: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  # Where this run's output starts: readiness checks must not match an earlier run's lines.
  stat -c %s "$log" >"$RUN/$name.logstart"
  # `setsid cmd &` directly in this shell (not in a subshell), so $! is the command itself and, as it
  # is not a group leader, setsid does not fork: pid == process group id (pitfall P9).
  setsid "$@" >>"$log" 2>&1 </dev/null &
  echo "$! $(start_time $!)" >"$RUN/$name.pid"
  # The settings it started with (Airflow's setproctitle overwrites /proc/<pid>/environ).
  env | grep -E '^(AF_|AIRFLOW__)' | sort >"$RUN/$name.env"
  STARTED_AT[$name]=$EPOCHSECONDS
  say "started $name (pid $!, log $log)"
}

# since_start <name>: the component's log from its latest start on (logs are appended across runs).
since_start() {
  local from
  from=$(($(cat "$RUN/$1.logstart" 2>/dev/null || echo 0) + 1))
  tail -c "+$from" "$RUN/$1.log" 2>/dev/null
}

# strays <pid>: processes below pid that left its process group (Airflow task processes call setpgid,
# P10), so a signal to the group misses them.
strays() {
  ps -e -o pid=,ppid=,pgid= | awk -v root="$1" '
    { parent[$1] = $2; group[$1] = $3 }
    END { for (p in parent) { if (group[p] == root) continue
            for (q = parent[p]; q > 1; q = parent[q]) if (q == root) { print p; break } } }'
}

any_alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

# stop_components <name...>: TERM each group (once: a second TERM makes the triggerer and Celery skip
# their graceful shutdown) and its strays, wait up to AF_STOP_TIMEOUT, then KILL what is left.
stop_components() {
  local name pid stray
  local -A leader=() members=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      leader[$name]=$pid; members[$name]=$pid
      # Found before the TERM: once the leader exits, its orphans are re-parented to init.
      for stray in $(strays "$pid"); do members[$name]+=" $stray"; kill -TERM "$stray" 2>/dev/null || true; done
      kill -TERM -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
  done
  local deadline=$((SECONDS + AF_STOP_TIMEOUT)) t_stop=${EPOCHREALTIME/./}
  while ((${#leader[@]})); do
    for name in "${!leader[@]}"; do
      # uvicorn is done once it logs this; the api-server then spends 3-5 s more in interpreter
      # teardown (py-spy: no Python frames left), which nothing needs.
      if [[ $name == api-server ]] && since_start api-server |
          grep -q "Finished server process \[${leader[$name]}\]"; then
        kill -KILL -- "-${leader[$name]}" 2>/dev/null || true
      fi
      # shellcheck disable=SC2086 # members holds a list of pids
      if ! group_alive "${leader[$name]}" && ! any_alive ${members[$name]}; then
        say "stopped $name (pid ${leader[$name]}) in $(fmt_us $((${EPOCHREALTIME/./} - t_stop)))s"
        unset "leader[$name]"
      fi
    done
    ((${#leader[@]})) || break
    if ((SECONDS >= deadline)); then
      for name in "${!leader[@]}"; do
        say "$name (pid ${leader[$name]}) still running after ${AF_STOP_TIMEOUT}s: KILL"
        # shellcheck disable=SC2086
        kill -KILL ${members[$name]} 2>/dev/null || true
        kill -KILL -- "-${leader[$name]}" 2>/dev/null || true
      done
      break
    fi
    sleep 0.1
  done
}

# group_alive <pgid...>: any process left in one of these process groups.
group_alive() { local g; for g in "$@"; do kill -0 -- "-$g" 2>/dev/null && return 0; done; return 1; }

# ------------------------------------------------------------------------------------------ network

# port_open <port>: something accepts TCP connections on 127.0.0.1:<port>.
port_open() { (exec 3<>"/dev/tcp/$AF_HOST/$1") 2>/dev/null; }

# redis_ping: PONG from 127.0.0.1:AF_REDIS_PORT, without needing redis-cli.
redis_ping() {
  local reply
  { exec 3<>"/dev/tcp/$AF_HOST/$AF_REDIS_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3<&-
  [[ $reply == +PONG* ]]
}

health_json() { curl -sf --max-time 3 "$AF_API_URL/api/v2/monitor/health"; }

# ------------------------------------------------------------------------------------------ steps of `up`

ensure_venv() {
  local stamp="$AF_VENV/.airflow-stack-installed" want="$INSTALL_SPEC python=$AF_PYTHON"
  if [[ -x $AIRFLOW_BIN && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    say "venv ok: $INSTALL_SPEC in $AF_VENV"
    return
  fi
  local uv=(uv)
  if ! command -v uv >/dev/null; then
    python3 -m pip install --quiet uv || die "could not pip-install uv"
    uv=(python3 -m uv)
  fi
  say "installing $INSTALL_SPEC into $AF_VENV (first time: ~5 s with a fast PyPI, longer otherwise)"
  local log="$RUN/install.log"
  {
    [[ -x $AF_VENV/bin/python ]] || "${uv[@]}" venv --python "$AF_PYTHON" "$AF_VENV"
    "${uv[@]}" pip install --python "$AF_VENV/bin/python" "$INSTALL_SPEC"
  } >"$log" 2>&1 || die "install of $INSTALL_SPEC failed; log: $log"
  # Written last: an interrupted install is simply redone (uv skips what is already there).
  echo "$want" >"$stamp"
  say "installed $INSTALL_SPEC ($(du -sh "$AF_VENV" | cut -f1))"
}

# Pre-fill the bytecode cache (P1) once per venv install: ~2x faster start of every Airflow process.
ensure_bytecode() {
  local stamp
  stamp="$PYTHONPYCACHEPREFIX/.complete-$(stat -c %Y "$AF_VENV/.airflow-stack-installed")"
  [[ -e $stamp ]] && return
  local site
  site=$("$AF_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # Only site-packages: compiling the whole stdlib (with its test suite) costs 25 s and 280 MB, while
  # the few hundred stdlib modules Airflow imports are cached by the first process that imports them.
  # Some files in site-packages are templates or for other Python versions: errors are expected.
  "$AF_VENV/bin/python" -m compileall -q -j 0 "$site" >"$RUN/compileall.log" 2>&1 || true
  rm -f "$PYTHONPYCACHEPREFIX"/.complete-*
  touch "$stamp"
  say "pre-compiled bytecode into $PYTHONPYCACHEPREFIX ($(du -sh "$PYTHONPYCACHEPREFIX" | cut -f1))"
}

# With AF_S3=1: the amazon provider (S3 remote logs, S3 hook) next to Airflow, kept at its version.
ensure_amazon() {
  local stamp="$AF_VENV/.amazon-installed" want="$AMAZON_SPEC with $INSTALL_SPEC"
  [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]] && { say "amazon provider ok ($AMAZON_SPEC)"; return; }
  uv pip install --python "$AF_VENV/bin/python" "$INSTALL_SPEC" "$AMAZON_SPEC" >"$RUN/install-amazon.log" 2>&1 ||
    die "install of $AMAZON_SPEC failed; log: $RUN/install-amazon.log"
  echo "$want" >"$stamp"
  say "installed $AMAZON_SPEC"
}

# With AF_S3=1: moto's S3 server (its pid file in $RUN, so `down` stops it only if we started it).
ensure_s3() {
  AF_S3_RUN_DIR="$RUN" "$AF_REPO/scripts/s3_server.sh" up >/dev/null || die "scripts/s3_server.sh up failed"
  "$AF_REPO/scripts/s3_server.sh" bucket "$AF_S3_BUCKET" || die "could not create bucket $AF_S3_BUCKET"
  say "s3 ok ($AF_S3_ENDPOINT, bucket $AF_S3_BUCKET, connection $AF_S3_CONN_ID)"
}

# A component started earlier keeps the environment it started with: say so when it differs.
warn_if_started_without() {
  local name=$1 var=$2 want=$3 pid have
  pid=$(pid_of "$name") || return 0
  have=$(sed -n "s/^$var=//p" "$RUN/$name.env" 2>/dev/null)
  [[ $have == "$want" ]] ||
    say "WARNING: $name (pid $pid) runs with $var='$have', not '$want': '$0 down' then up to change it"
}

ensure_redis() {
  if redis_ping; then
    if pid_of redis >/dev/null; then say "redis ok (ours, pid $(pid_of redis))"
    else say "redis ok (already running on $AF_HOST:$AF_REDIS_PORT, not ours: left alone by down)"; fi
    return
  fi
  command -v redis-server >/dev/null || die "no Redis on $AF_HOST:$AF_REDIS_PORT and no redis-server to start"
  # A pid file means "started by us": only then does `down` stop it.
  start_process redis redis-server --bind "$AF_HOST" --port "$AF_REDIS_PORT" --save '' \
    --appendonly no --dir "$RUN"
  local deadline=$((SECONDS + 10))
  until redis_ping; do
    ((SECONDS < deadline)) || die "redis did not answer within 10s; log: $RUN/redis.log"
    sleep 0.1
  done
}

migrate_db() {
  # `db migrate` is idempotent but costs ~3 s of imports; skip it when this Airflow version already
  # migrated this DB file (the stamp goes when the DB file goes).
  local stamp="$AIRFLOW_HOME/.migrated" want="$AF_AIRFLOW_VERSION $AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
  if [[ -e $AIRFLOW_HOME/airflow.db && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    say "db ok (migrated before by $AF_AIRFLOW_VERSION)"
    return
  fi
  "$AIRFLOW_BIN" db migrate >"$RUN/db-migrate.log" 2>&1 || die "airflow db migrate failed; log: $RUN/db-migrate.log"
  echo "$want" >"$stamp"
  say "db migrated ($AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"
}

# ensure_component <name> <airflow args...>
ensure_component() {
  local name=$1; shift
  local pid
  if pid=$(pid_of "$name"); then say "$name ok (pid $pid)"; return; fi
  if [[ $name == api-server ]] && port_open "$AF_PORT"; then
    die "port $AF_HOST:$AF_PORT is taken by another process; set AF_PORT (log: $RUN/api-server.log)"
  fi
  start_process "$name" "$AIRFLOW_BIN" "$@"
}

# fail_if_dead <name...>: a component that exited while we wait is reported at once, not at the timeout.
fail_if_dead() {
  local name
  for name in "$@"; do
    [[ -e $RUN/$name.pid ]] || continue
    pid_of "$name" >/dev/null || die "$name exited during start; log: $RUN/$name.log"
  done
}

# unhealthy_keys <health json>: the health keys not yet healthy. A component started by this `up` must
# also have a heartbeat newer than its start: right after a restart the DB still holds the previous
# processes' heartbeats, and the health endpoint calls those healthy for another 30-60 s.
unhealthy_keys() {
  local key args=()
  for key in "${!HEALTH_OF[@]}"; do args+=("$key=${STARTED_AT[${HEALTH_OF[$key]}]:-0}"); done
  "$AF_VENV/bin/python" -c '
import datetime, json, sys
d = json.loads(sys.argv[1])
for arg in sys.argv[2:]:
    key, since = arg.split("=")
    part = d.get(key) or {}
    beat = part.get(f"latest_{key}_heartbeat")
    fresh = beat is None or datetime.datetime.fromisoformat(beat).timestamp() >= int(since)
    if part.get("status") != "healthy" or (key != "metadatabase" and not fresh):
        print(key)' "$1" "${args[@]}" | tr '\n' ' '
}

wait_healthy() {
  local deadline=$((SECONDS + AF_UP_TIMEOUT)) health unhealthy warm_pid=""
  while :; do
    fail_if_dead api-server scheduler dag-processor triggerer celery-worker
    if health=$(health_json); then
      # The Execution API sub-app is built on its first request (~3 s, P5): start that now, in
      # parallel with the wait for the other components, not inside the first task's /run.
      if [[ -z $warm_pid ]]; then
        curl -sf --max-time 60 -o /dev/null "$AF_API_URL/execution/health" &
        warm_pid=$!
      fi
      unhealthy=$(unhealthy_keys "$health")
    else
      unhealthy="metadatabase"   # the api-server does not answer yet
    fi
    [[ -z ${unhealthy// /} ]] && break
    if ((SECONDS >= deadline)); then
      local first=${unhealthy%% *}
      die "${HEALTH_OF[$first]} not healthy after ${AF_UP_TIMEOUT}s ($first); log: $RUN/${HEALTH_OF[$first]}.log"
    fi
    sleep 0.5
  done
  say "healthy: metadatabase, scheduler, dag_processor, triggerer (fresh heartbeats)"
  wait "$warm_pid" || die "GET /execution/health failed; log: $RUN/api-server.log"
  say "execution API warm ($AF_API_URL/execution/)"
}

# Celery prints "<nodename> ready." once it consumes; the health endpoint does not cover workers.
wait_worker_ready() {
  local deadline=$((SECONDS + AF_UP_TIMEOUT))
  until since_start celery-worker | grep -q "$WORKER_NODENAME ready"; do
    fail_if_dead celery-worker
    ((SECONDS < deadline)) || die "celery-worker not ready after ${AF_UP_TIMEOUT}s; log: $RUN/celery-worker.log"
    sleep 0.3
  done
  say "celery-worker ready (queues: $AF_WORKER_QUEUES)"
}

# Every non-underscore *.py file in the DAGs folder must show up as a DAG in the REST API; an import
# error fails at once with its message instead of waiting for the timeout.
wait_dags_visible() {
  local deadline=$((SECONDS + AF_UP_TIMEOUT)) result
  while :; do
    result=$(DAGS_FOLDER="$AF_DAGS_FOLDER" API="$AF_API_URL/api/v2" "$AF_VENV/bin/python" - <<'EOF'
import json, os, pathlib, urllib.request
api, folder = os.environ["API"], pathlib.Path(os.environ["DAGS_FOLDER"])
get = lambda path: json.load(urllib.request.urlopen(api + path, timeout=5))
want = {str(p.relative_to(folder)) for p in folder.rglob("*.py") if not p.name.startswith("_")}
for err in get("/importErrors?limit=1000")["import_errors"]:
    name = os.path.relpath(err["filename"], folder) if os.path.isabs(err["filename"]) else err["filename"]
    if name in want:
        last = [ln for ln in err["stack_trace"].strip().splitlines() if ln.strip()][-1]
        print(f"ERROR {name}: {last.strip()}")
        raise SystemExit
have = {d["relative_fileloc"] for d in get("/dags?limit=1000")["dags"]}
print(f"{len(want & have)}/{len(want)}" + ("" if want <= have else " missing: " + " ".join(sorted(want - have))))
EOF
) || result="0/? (api not answering)"
    [[ $result == ERROR* ]] && die "DAG file import error: ${result#ERROR } (dag-processor logs: $AIRFLOW_HOME/logs/dag_processor/)"
    [[ $result != *missing* && $result != *'?'* ]] && break
    ((SECONDS < deadline)) ||
      die "DAG files not visible after ${AF_UP_TIMEOUT}s: $result; log: $RUN/dag-processor.log"
    sleep 0.5
  done
  say "DAG files visible in the REST API: $result ($AF_DAGS_FOLDER)"
}

write_stack_env() {
  {
    echo "# written by scripts/airflow_stack.sh up at $(date -u +%FT%TZ); ready after $(elapsed)s"
    echo "API_URL=$AF_API_URL"
    echo "PUBLIC_API=$AF_API_URL/api/v2"
    echo "EXECUTION_API=$AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
    echo "BROKER_URL=$AF_BROKER_URL"
    echo "RESULT_BACKEND=$AF_RESULT_BACKEND"
    echo "DAGS_FOLDER=$AF_DAGS_FOLDER"
    echo "LOGS=$AIRFLOW__LOGGING__BASE_LOG_FOLDER"
    local name pid
    for name in redis "${COMPONENTS[@]}"; do
      pid=$(pid_of "$name") || pid=-
      echo "PID_${name//-/_}=$pid"
    done
  } >"$RUN/stack.env"
}

COMPONENTS=(api-server scheduler dag-processor triggerer celery-worker)
WORKER_NODENAME="airflow-e2e@$(hostname)"

cmd_up() {
  case "${1:-}" in
    --worker) AF_WORKER=1 ;;
    "") ;;
    *) die "unknown option for up: $1 (only --worker)" ;;
  esac
  mkdir -p "$RUN" "$AIRFLOW__LOGGING__BASE_LOG_FOLDER" "$AF_DAGS_FOLDER"
  # Celery's file-system result backend refuses a directory that does not exist.
  if [[ $AF_RESULT_BACKEND == file://* ]]; then mkdir -p "${AF_RESULT_BACKEND#file://}"; fi
  ensure_venv
  if [[ $AF_S3 == 1 ]]; then ensure_amazon; fi
  ensure_bytecode
  if [[ $AF_S3 == 1 ]]; then ensure_s3; fi
  warn_if_started_without api-server AIRFLOW__LOGGING__REMOTE_LOGGING "${AIRFLOW__LOGGING__REMOTE_LOGGING:-}"
  warn_if_started_without celery-worker AIRFLOW__CORE__XCOM_BACKEND "${AIRFLOW__CORE__XCOM_BACKEND:-}"
  if [[ $AF_BROKER == redis ]]; then
    ensure_redis
  else
    say "broker: $AF_BROKER_URL, results: $AF_RESULT_BACKEND (embedded, no Redis)"
  fi
  migrate_db
  ensure_component api-server api-server --host "$AF_HOST" --port "$AF_PORT"
  ensure_component scheduler scheduler
  ensure_component dag-processor dag-processor
  # --skip-serve-logs: the log servers of triggerer and worker bind 0.0.0.0 and [::] with no host
  # option (P2); the api-server reads task logs from the local files instead.
  ensure_component triggerer triggerer --skip-serve-logs
  if [[ $AF_WORKER == 1 ]]; then
    [[ ,$AF_WORKER_QUEUES, == *,bundles,* ]] &&
      say "WARNING: Airflow's worker on queue 'bundles' fails every @task.stub task it takes (P6)"
    # Own nodename: no DuplicateNodenameWarning next to other Celery workers on this host.
    ensure_component celery-worker celery worker --skip-serve-logs --queues "$AF_WORKER_QUEUES" \
      --concurrency "$AF_WORKER_CONCURRENCY" --celery-hostname "$WORKER_NODENAME" \
      --pid "$RUN/celery-worker.celery-pid"
  elif pid_of celery-worker >/dev/null; then
    say "celery-worker left running (AF_WORKER=0 does not stop it; use down)"
  fi
  wait_healthy
  if pid_of celery-worker >/dev/null; then wait_worker_ready; fi
  wait_dags_visible
  write_stack_env
  say "up: $AF_API_URL (UI, /api/v2, /execution/); env: eval \"\$($0 env)\""
}

cmd_down() {
  [[ -d $RUN ]] || { say "nothing to stop ($RUN does not exist)"; return; }
  # All at once: each takes 2-5 s to shut down gracefully (Celery's warm shutdown, uvicorn), so in
  # sequence down took ~9 s. A task still running then cannot report to the api-server and is killed
  # after AF_STOP_TIMEOUT: tests should not leave tasks running at the end anyway.
  stop_components celery-worker triggerer scheduler dag-processor api-server
  stop_components redis
  local moto port
  for moto in "$RUN"/moto-*.pid; do
    [[ -e $moto ]] || continue
    port=${moto##*/moto-}; port=${port%.pid}
    AF_S3_RUN_DIR="$RUN" AF_S3_PORT="$port" "$AF_REPO/scripts/s3_server.sh" down
  done
  rm -f "$RUN/stack.env"
  say "down"
}

cmd_status() {
  local name pid rc=0
  for name in redis "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$name"); then
      printf '%-14s running  pid %s\n' "$name" "$pid"
    elif [[ -e $RUN/$name.pid ]]; then
      printf '%-14s DEAD     (stale pid file; log %s)\n' "$name" "$RUN/$name.log"; rc=1
    elif [[ $name == redis && $AF_BROKER != redis ]]; then
      printf '%-14s not used (AF_BROKER=%s)\n' redis "$AF_BROKER"
    elif [[ $name == redis ]] && redis_ping; then
      printf '%-14s external (%s:%s)\n' redis "$AF_HOST" "$AF_REDIS_PORT"
    elif [[ $name == celery-worker ]]; then
      printf '%-14s not started\n' "$name"
    else
      printf '%-14s down\n' "$name"; rc=1
    fi
  done
  local health
  if health=$(health_json); then
    local line
    line=$(pyjson 'st = {k: (d.get(k) or {}).get("status") for k in sys.argv[1:]}
print(" ".join(f"{k}={v}" for k, v in st.items()) + ("" if set(st.values()) == {"healthy"} else " NOT-HEALTHY"))' <<<"$health")
    printf 'health         %s\n' "${line% NOT-HEALTHY}"
    [[ $line == *NOT-HEALTHY ]] && rc=1
  else
    printf 'health         no answer from %s\n' "$AF_API_URL"; rc=1
  fi
  return $rc
}

cmd_env() {
  echo "unset PYTHONDONTWRITEBYTECODE"
  local var
  for var in $(compgen -e | grep -E '^(AF_|AIRFLOW_HOME$|AIRFLOW__|PYTHONPYCACHEPREFIX$)'); do
    printf 'export %s=%q\n' "$var" "${!var}"
  done
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) rc=0; cmd_status || rc=$?; exit "$rc" ;;
  env) cmd_env ;;
  airflow) shift; exec "$AIRFLOW_BIN" "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

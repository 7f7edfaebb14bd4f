#!/usr/bin/env bash
# Sets up and starts the real services chipfleet's tests use, on Debian 12, as root:
#   - Docker Engine (Debian's docker.io; dockerd is started here when no daemon answers)
#   - PostgreSQL 15 (cluster 15/main, started with pg_ctlcluster; test roles and database)
#   - tinyproxy (an HTTP proxy with Basic auth on 127.0.0.1, for proxy health checks)
#   - headless Chromium and its WebDriver (Debian's chromium and chromium-driver), for the
#     dashboard's browser test (crates/chip-service/tests/dashboard.rs starts chromedriver)
#
# Idempotent: a second run finds everything in place, changes nothing and is quick.
# Progress goes to stderr. On success stdout carries only `export NAME=value` lines with the
# settings the tests read, so callers can `eval "$(scripts/test-env.sh)"`.
# On failure it exits non-zero naming the step that failed and why.
set -euo pipefail

# Stdout carries the settings alone. Everything else runs inside `{ ... } >&2` below, so every
# tool (apt, pg_ctlcluster's "Removed stale pid file", ...) writes to stderr, and no daemon this
# script starts holds the caller's stdout: `$(scripts/test-env.sh)` sees end-of-file when the
# script ends. The settings are written to a file and printed last.
settings_file=$(mktemp)
trap 'rm -f "$settings_file"' EXIT

log() { printf '[test-env] %s\n' "$*" >&2; }
fail() {
  printf '[test-env] FAILED at step "%s": %s\n' "$1" "$2" >&2
  exit 1
}

STATE_DIR=/var/lib/chipfleet-test
LOG_DIR=/var/log/chipfleet-test

PG_VERSION=15
PG_CLUSTER=main
PG_PORT=5432
PG_DB=chipfleet
PG_OWNER=chipfleet
PG_OWNER_PASSWORD=chipfleet
PG_APP=chipfleet_app
PG_APP_PASSWORD=chipfleet_app
PG_BYPASS=chipfleet_bypass
PG_OWNER_MEMBER=chipfleet_owner_member
# A role without BYPASSRLS of its own, member of the BYPASSRLS role through a group role (it
# could SET ROLE to it). The owner role has no CREATEROLE, so tests cannot create it themselves.
PG_BYPASS_GROUP=chipfleet_bypass_group
PG_BYPASS_MEMBER=chipfleet_bypass_member

PROXY_PORT=18888
PROXY_USER=chipfleet
# tinyproxy 1.11's config grammar accepts only [A-Za-z0-9._-] in BasicAuth credentials, so the
# reserved characters of proxy passwords (@ : /; docs/waha-contract.md, "Session config") are
# covered by unit tests, not by this proxy.
PROXY_PASSWORD='s3cr-et.p_ss'

DOCKER_SOCKET=/var/run/docker.sock
PROXY_RUN_DIR=$STATE_DIR/tinyproxy-run

{
# --- step: environment ------------------------------------------------------------------
step=environment
# Any command that fails without its own message still names the step and the command.
trap 'fail "$step" "line $LINENO: \`$BASH_COMMAND\` failed"' ERR
[ "$(id -u)" -eq 0 ] || fail "$step" "must run as root (it installs packages and starts daemons); try: sudo $0"
[ -r /etc/debian_version ] || fail "$step" "this script targets Debian 12; /etc/debian_version is missing"
mkdir -p "$STATE_DIR" "$LOG_DIR"

# --- step: packages -----------------------------------------------------------------------
step=packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[ -x /usr/lib/postgresql/$PG_VERSION/bin/postgres ] || missing+=(postgresql-$PG_VERSION)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql-common)
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
# cc and the static C library: the Docker smoke test and the waha-sim image link statically.
dpkg -s libc6-dev >/dev/null 2>&1 || missing+=(libc6-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
# The dashboard's browser test: headless Chromium driven over WebDriver by chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$LOG_DIR/apt-update.log" 2>&1 \
    || fail "$step" "apt-get update failed (see $LOG_DIR/apt-update.log)"
  # policy-rc.d on these machines refuses service starts during install; we start daemons below.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt-install.log" 2>&1 \
    || fail "$step" "apt-get install ${missing[*]} failed (see $LOG_DIR/apt-install.log)"
else
  log "packages: all present"
fi

# --- step: browser ------------------------------------------------------------------------
step=browser
# Both must run (as root the test passes --no-sandbox; nothing else is needed to start them).
chromium --version >/dev/null 2>&1 \
  || fail "$step" "\`chromium --version\` failed (Debian's chromium package; the dashboard's browser test runs it headless)"
chromedriver --version >/dev/null 2>&1 \
  || fail "$step" "\`chromedriver --version\` failed (Debian's chromium-driver package)"
log "browser: $(chromium --version 2>/dev/null | head -n 1), $(chromedriver --version 2>/dev/null | head -n 1 | cut -d ' ' -f 1-2)"

# --- step: docker -------------------------------------------------------------------------
step=docker
docker_up() { docker info >/dev/null 2>&1; }
if ! command -v docker >/dev/null 2>&1; then
  fail "$step" "the docker CLI is missing after installing docker.io"
fi
if docker_up; then
  log "docker: daemon already answers"
else
  log "docker: starting dockerd (log: $LOG_DIR/dockerd.log)"
  # A stale pid file from a daemon that died would stop a new one from starting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  # In a session of its own (setsid): a daemon started from inside a test (a restart through
  # scripts/restart-service.sh) must not end with the test's process group.
  setsid -f dockerd --host "unix://$DOCKER_SOCKET" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null
  for _ in $(seq 1 120); do
    docker_up && break
    sleep 0.5
  done
  docker_up || fail "$step" "dockerd did not answer 'docker info' within 60 s; last log lines: $(tail -n 5 "$LOG_DIR/dockerd.log" | tr '\n' ' ')"
  log "docker: daemon ready"
fi

# --- step: postgresql ---------------------------------------------------------------------
step=postgresql
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$PG_VERSION $PG_CLUSTER"; then
  log "postgresql: creating cluster $PG_VERSION/$PG_CLUSTER"
  pg_createcluster "$PG_VERSION" "$PG_CLUSTER" -p "$PG_PORT" >"$LOG_DIR/pg_createcluster.log" 2>&1 \
    || fail "$step" "pg_createcluster failed (see $LOG_DIR/pg_createcluster.log)"
fi
if pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -qx online; then
  log "postgresql: cluster $PG_VERSION/$PG_CLUSTER already online"
else
  log "postgresql: starting cluster $PG_VERSION/$PG_CLUSTER"
  pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start \
    || fail "$step" "pg_ctlcluster $PG_VERSION $PG_CLUSTER start failed (see /var/log/postgresql/)"
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || fail "$step" "PostgreSQL does not accept connections on 127.0.0.1:$PG_PORT"

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qAt -p $PG_PORT $*"; }
# Roles: the owner runs migrations and owns the tables; the app role owns nothing, so
# row-level security applies to it (FORCE RLS covers the owner too).
role_sql=$(cat <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_OWNER') THEN
    CREATE ROLE $PG_OWNER LOGIN CREATEDB PASSWORD '$PG_OWNER_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP') THEN
    CREATE ROLE $PG_APP LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '$PG_APP_PASSWORD';
  END IF;
  -- Two roles that must NOT be accepted for tenant-scoped access, so tests can prove they are
  -- refused: one bypasses row-level security, one is a member of the tables' owner.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_BYPASS') THEN
    CREATE ROLE $PG_BYPASS LOGIN BYPASSRLS PASSWORD '$PG_BYPASS';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_OWNER_MEMBER') THEN
    CREATE ROLE $PG_OWNER_MEMBER LOGIN PASSWORD '$PG_OWNER_MEMBER' IN ROLE $PG_OWNER;
  END IF;
  -- And one that only belongs, through a group role, to the BYPASSRLS role.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_BYPASS_GROUP') THEN
    CREATE ROLE $PG_BYPASS_GROUP NOLOGIN NOBYPASSRLS IN ROLE $PG_BYPASS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_BYPASS_MEMBER') THEN
    CREATE ROLE $PG_BYPASS_MEMBER LOGIN NOBYPASSRLS PASSWORD '$PG_BYPASS_MEMBER' IN ROLE $PG_BYPASS_GROUP;
  END IF;
END
\$\$;
SQL
)
printf '%s\n' "$role_sql" | psql_admin -d postgres >/dev/null \
  || fail "$step" "could not create the roles $PG_OWNER and $PG_APP"
if [ "$(psql_admin -d postgres -c "\"SELECT 1 FROM pg_database WHERE datname = '$PG_DB'\"")" != "1" ]; then
  log "postgresql: creating database $PG_DB owned by $PG_OWNER"
  psql_admin -d postgres -c "\"CREATE DATABASE $PG_DB OWNER $PG_OWNER\"" >/dev/null \
    || fail "$step" "could not create database $PG_DB"
fi
psql_admin -d "$PG_DB" -c "\"GRANT CONNECT, TEMPORARY ON DATABASE $PG_DB TO $PG_APP, $PG_BYPASS, $PG_BYPASS_MEMBER; GRANT USAGE ON SCHEMA public TO $PG_APP, $PG_BYPASS, $PG_BYPASS_MEMBER\"" >/dev/null \
  || fail "$step" "could not grant $PG_APP access to $PG_DB"
PGPASSWORD="$PG_APP_PASSWORD" psql -qAt -h 127.0.0.1 -p "$PG_PORT" -U "$PG_APP" -d "$PG_DB" -c 'SELECT 1' >/dev/null \
  || fail "$step" "the app role cannot log in over TCP on 127.0.0.1:$PG_PORT (check pg_hba.conf)"
log "postgresql: ready (database $PG_DB, roles $PG_OWNER, $PG_APP, and the must-be-refused $PG_BYPASS, $PG_OWNER_MEMBER, $PG_BYPASS_MEMBER)"

# --- step: tinyproxy ----------------------------------------------------------------------
step=tinyproxy
PROXY_CONF="$STATE_DIR/tinyproxy.conf"
want_conf=$(cat <<CONF
# Written by chipfleet scripts/test-env.sh: a loopback-only HTTP proxy with Basic auth.
Port $PROXY_PORT
Listen 127.0.0.1
Bind 127.0.0.1
Timeout 30
MaxClients 200
Allow 127.0.0.1
# No ConnectPort line: CONNECT may reach any port (health-check targets listen on ephemeral
# loopback ports). The proxy itself only listens on, and only admits, 127.0.0.1.
BasicAuth $PROXY_USER $PROXY_PASSWORD
PidFile "$PROXY_RUN_DIR/tinyproxy.pid"
LogFile "$LOG_DIR/tinyproxy.log"
LogLevel Warning
CONF
)
conf_changed=0
if [ ! -f "$PROXY_CONF" ] || [ "$(cat "$PROXY_CONF")" != "$want_conf" ]; then
  printf '%s\n' "$want_conf" >"$PROXY_CONF"
  conf_changed=1
fi
proxy_listens() { (exec 4<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; }
# Ours is the tinyproxy started with our config file; a pid file alone can be stale or reused.
proxy_running() { pgrep -f "^tinyproxy -c $PROXY_CONF\$" >/dev/null && proxy_listens; }
if [ "$conf_changed" -eq 0 ] && proxy_running; then
  log "tinyproxy: already running on 127.0.0.1:$PROXY_PORT"
else
  if pgrep -f "^tinyproxy -c $PROXY_CONF\$" >/dev/null; then
    pkill -f "^tinyproxy -c $PROXY_CONF\$" || true
    sleep 0.5
  fi
  # tinyproxy drops to `nobody`: it gets its own directory for the pid file and its log file;
  # the state directory (with the config) stays root's.
  chmod 0755 "$STATE_DIR"
  mkdir -p "$PROXY_RUN_DIR"
  chown nobody:nogroup "$PROXY_RUN_DIR"
  touch "$LOG_DIR/tinyproxy.log"
  chown nobody:nogroup "$LOG_DIR/tinyproxy.log"
  tinyproxy -c "$PROXY_CONF" || fail "$step" "tinyproxy did not start (see $LOG_DIR/tinyproxy.log)"
  for _ in $(seq 1 40); do
    proxy_listens && break
    sleep 0.25
  done
  proxy_listens \
    || fail "$step" "tinyproxy does not listen on 127.0.0.1:$PROXY_PORT (see $LOG_DIR/tinyproxy.log)"
  log "tinyproxy: started on 127.0.0.1:$PROXY_PORT"
fi

# --- settings the tests read --------------------------------------------------------------
cat >"$settings_file" <<ENV
export DOCKER_HOST=unix://$DOCKER_SOCKET
export DATABASE_URL=postgres://$PG_OWNER:$PG_OWNER_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export APP_DATABASE_URL=postgres://$PG_APP:$PG_APP_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export BYPASS_DATABASE_URL=postgres://$PG_BYPASS:$PG_BYPASS@127.0.0.1:$PG_PORT/$PG_DB
export OWNER_MEMBER_DATABASE_URL=postgres://$PG_OWNER_MEMBER:$PG_OWNER_MEMBER@127.0.0.1:$PG_PORT/$PG_DB
export BYPASS_MEMBER_DATABASE_URL=postgres://$PG_BYPASS_MEMBER:$PG_BYPASS_MEMBER@127.0.0.1:$PG_PORT/$PG_DB
export TEST_PROXY_URL=http://$PROXY_USER:$PROXY_PASSWORD@127.0.0.1:$PROXY_PORT
ENV
log "ready"
} >&2
cat "$settings_file"

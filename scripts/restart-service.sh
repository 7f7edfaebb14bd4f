#!/usr/bin/env bash
# Restarts one of the shared services the tests use, for the tests that must see it go away
# and come back (crates/chip-service/tests/daemon_faults.rs); the only way those tests touch a
# daemon, so they put it back the same way every time.
#
#   scripts/restart-service.sh docker       stop dockerd (its containers stop with it), then start
#                                           it again
#   scripts/restart-service.sh postgresql   stop the PostgreSQL 15 cluster (fast: connections are
#                                           cut), then start it again
#
# Stopping is done here; starting is scripts/test-env.sh's (idempotent: it starts whatever does
# not answer and waits until it does), so a restarted service is exactly what a fresh set-up
# gives. Options: --down SECONDS keeps the service down that long before starting it (default 0).
#
# Progress goes to stderr. Exits non-zero, naming the step, when the service cannot be stopped
# or does not come back: the calling test then fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[restart-service] %s\n' "$*" >&2; }
fail() {
  printf '[restart-service] FAILED: %s\n' "$*" >&2
  exit 1
}

service=${1:-}
down=0
if [ "${2:-}" = "--down" ]; then
  down=${3:?--down needs a number of seconds}
fi
[ "$(id -u)" -eq 0 ] || fail "must run as root (it stops and starts daemons)"

case "$service" in
  docker)
    pid_file=/var/run/docker.pid
    [ -f "$pid_file" ] || fail "no $pid_file: dockerd is not running as scripts/test-env.sh starts it"
    pid=$(cat "$pid_file")
    kill -0 "$pid" 2>/dev/null || fail "dockerd (pid $pid from $pid_file) is not running"
    log "docker: stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers first (each gets its stop timeout), then exits.
    for _ in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      fail "dockerd (pid $pid) did not exit within 60 s of SIGTERM"
    fi
    log "docker: dockerd stopped"
    ;;
  postgresql)
    log "postgresql: stopping cluster 15/main (fast)"
    pg_ctlcluster 15 main stop -m fast || fail "pg_ctlcluster 15 main stop failed"
    log "postgresql: stopped"
    ;;
  *)
    fail "usage: $0 docker|postgresql [--down SECONDS]"
    ;;
esac

if [ "$down" != 0 ]; then
  log "$service: kept down for $down s"
  sleep "$down"
fi

log "$service: starting again (scripts/test-env.sh)"
scripts/test-env.sh >/dev/null || fail "scripts/test-env.sh could not start $service again"
log "$service: back"

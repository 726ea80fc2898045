#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and Redis
# (127.0.0.1:6379) answer. On a fresh Debian machine it installs them from
# Debian's packages and starts them; where they already run it does nothing.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! command -v pg_isready >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
  log "installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
if ! postgres_up; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
    log "allowing trust auth for postgres on 127.0.0.1 ($hba)"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 50); do postgres_up && break; sleep 0.2; done
fi
postgres_up || { log "PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres"; exit 1; }

if ! command -v redis-server >/dev/null; then
  log "installing Redis"
  apt_install redis-server
fi
if ! redis_up; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis_up && break; sleep 0.2; done
fi
redis_up || { log "Redis is not reachable on 127.0.0.1:6379"; exit 1; }
log "PostgreSQL and Redis are up"

#!/usr/bin/env bash
# local.sh runs regiond on a local default: two throwaway MariaDB regions,
# "east" and "west", started by scripts/testdb.sh in a temp dir, a demo table
# `accounts` in both, a config file, and `regiond run` in the foreground.
# Write to either region (the script prints the mariadb commands) and watch
# the change appear in the other. Ctrl-C stops regiond and removes the servers.
#
#   scripts/local.sh            (KEEP=1 keeps the servers' directory)
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
work=$(mktemp -d /tmp/regiond-local.XXXXXX)
export PATH="$PATH:/usr/sbin:/sbin"

cleanup() {
	"$root/scripts/testdb.sh" stop "$work/east" >/dev/null 2>&1 || true
	"$root/scripts/testdb.sh" stop "$work/west" >/dev/null 2>&1 || true
	if [[ -z "${KEEP:-}" ]]; then rm -rf -- "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

echo "building regiond..." >&2
(cd "$root" && go build -o "$work/regiond" ./cmd/regiond)

east_port=$("$root/scripts/testdb.sh" start-mariadb "$work/east" 1 | sed -n 's/^PORT=//p')
west_port=$("$root/scripts/testdb.sh" start-mariadb "$work/west" 2 | sed -n 's/^PORT=//p')

schema="CREATE TABLE IF NOT EXISTS accounts (
  id BIGINT NOT NULL PRIMARY KEY,
  owner VARCHAR(64) NOT NULL,
  balance DECIMAL(20,2) NOT NULL,
  updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
)"
# Distinct auto-increment sequences per region, as regiond check asks.
mariadb --no-defaults -uroot -h127.0.0.1 -P"$east_port" app -e "SET GLOBAL auto_increment_increment=2, GLOBAL auto_increment_offset=1; $schema"
mariadb --no-defaults -uroot -h127.0.0.1 -P"$west_port" app -e "SET GLOBAL auto_increment_increment=2, GLOBAL auto_increment_offset=2; $schema"

cat >"$work/regiond.yaml" <<YAML
regions:
  - name: east
    engine: mysql
    dsn: mysql://root@127.0.0.1:$east_port/app
  - name: west
    engine: mysql
    dsn: mysql://root@127.0.0.1:$west_port/app
tables:
  accounts: {}
YAML

cat >&2 <<MSG

Two regions are up. Config: $work/regiond.yaml
  write in east:  mariadb --no-defaults -uroot -h127.0.0.1 -P$east_port app -e "INSERT INTO accounts (id, owner, balance) VALUES (1, 'ana', 10)"
  read in west:   mariadb --no-defaults -uroot -h127.0.0.1 -P$west_port app -e "SELECT * FROM accounts"
  check setup:    $work/regiond check --config $work/regiond.yaml
Starting regiond (Ctrl-C to stop and clean up)...

MSG
"$work/regiond" check --config "$work/regiond.yaml" || true
"$work/regiond" run --config "$work/regiond.yaml" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
wait $pid || true

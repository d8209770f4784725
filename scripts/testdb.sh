#!/usr/bin/env bash
# testdb.sh starts and stops private, throwaway database servers for regiond's
# tests and benchmarks. Every server lives entirely inside one directory DIR and
# listens on 127.0.0.1 on a free TCP port; the system servers (3306, 5432) and
# /etc/mysql are never touched.
#
#   scripts/testdb.sh start-mariadb DIR [SERVER_ID]   MariaDB 10.11 with a ROW binlog
#   scripts/testdb.sh start-postgres DIR              PostgreSQL 15 with wal_level=logical
#   scripts/testdb.sh stop DIR                        clean shutdown, data kept
#   scripts/testdb.sh kill DIR                        SIGKILL (crash simulation)
#
# start-* prints exactly one line, PORT=<port>, on stdout and stores the port in
# DIR/port; starting again on the same DIR reuses its data and its port. A new
# server gets a database named `app`, and root (MariaDB, empty password) or
# postgres (PostgreSQL, trust) can log in over TCP from 127.0.0.1; the MariaDB
# setup is done with sql_log_bin=0, so a new server's binlog holds no transactions.
# Extra mariadbd flags can be given in MARIADB_EXTRA_ARGS (space separated).
# stop and kill succeed when nothing is running. Diagnostics go to stderr; the
# servers log to DIR/error.log (MariaDB) or DIR/server.log (PostgreSQL).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
START_TIMEOUT=30 # seconds to wait for a server to answer
STOP_TIMEOUT=30  # seconds to wait for a clean shutdown before SIGKILL
PORT_ATTEMPTS=5  # fresh ports tried when the chosen one is taken meanwhile

export PATH="$PATH:/usr/sbin:/sbin"

usage() {
	cat >&2 <<'EOF'
usage: testdb.sh start-mariadb DIR [SERVER_ID]
       testdb.sh start-postgres DIR
       testdb.sh stop DIR
       testdb.sh kill DIR
EOF
	exit 2
}

die() {
	echo "testdb.sh: $*" >&2
	exit 1
}

# abs_dir DIR: creates DIR (mode 700) if needed and prints its absolute path.
abs_dir() {
	mkdir -p -m 700 -- "$1"
	(cd -- "$1" && pwd -P)
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
		return
	fi
	local used port i
	used=$(ss -ltnH | awk '{print $4}')
	for ((i = 0; i < 1000; i++)); do
		port=$((20000 + RANDOM % 30000))
		if ! grep -qE "[:.]$port\$" <<<"$used"; then
			echo "$port"
			return
		fi
	done
	die "no free TCP port found"
}

# alive PID: true while any thread of process PID is still running. Detached
# servers are reparented to PID 1, which may never reap them, so a zombie
# counts as dead. All threads are checked: after SIGKILL the main thread of
# mariadbd turns zombie while other threads are still exiting and the process
# still holds its files, including the listening socket.
alive() {
	local task stat
	for task in "/proc/$1/task"/*/stat; do
		stat=$(cat "$task" 2>/dev/null) || continue
		stat=${stat##*) }
		case ${stat%% *} in
		Z | X) ;;
		*) return 0 ;;
		esac
	done
	return 1
}

# wait_gone TIMEOUT PID...: waits until none of the PIDs is alive.
wait_gone() {
	local deadline=$((SECONDS + $1)) pid
	shift
	for pid in "$@"; do
		while alive "$pid"; do
			((SECONDS < deadline)) || return 1
			sleep 0.05
		done
	done
}

# pid_from FILE NAME...: prints the PID stored in FILE's first line if that
# process is alive and its command is one of NAMEs; fails otherwise.
pid_from() {
	local file=$1 pid comm name
	shift
	[[ -r $file ]] || return 1
	read -r pid <"$file" || [[ -n ${pid:-} ]] || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	for name in "$@"; do
		[[ $comm == "$name" ]] && { echo "$pid"; return 0; }
	done
	return 1
}

# new_log_lines FILE N: prints FILE from line N+1 on (what the last start wrote).
new_log_lines() {
	tail -n "+$(($2 + 1))" -- "$1" 2>/dev/null || true
}

line_count() {
	if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi
}

# ---------------------------------------------------------------- MariaDB

mariadb_pid() { pid_from "$1/mysqld.pid" mariadbd mysqld; }

ensure_mariadb() {
	if ! command -v mariadbd >/dev/null 2>&1; then
		echo "testdb.sh: mariadbd not found, installing mariadb-server" >&2
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server; } >&2 ||
			die "installing mariadb-server failed; run: apt-get install -y mariadb-server"
		# The package may start its own server on 3306; it is left alone.
	fi
	local tool
	for tool in mariadbd mariadb-install-db mariadb-admin mariadb; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool not found; run: apt-get install -y mariadb-server"
	done
}

start_mariadb() {
	[[ $# -ge 1 && $# -le 2 ]] || usage
	local dir server_id=${2:-1}
	[[ $server_id =~ ^[0-9]+$ ]] || die "SERVER_ID must be a number, got '$server_id'"
	dir=$(abs_dir "$1")
	local sock=$dir/mysqld.sock
	((${#sock} < 100)) || die "socket path $sock is too long for a unix socket; use a shorter DIR"
	ensure_mariadb

	local pid
	if pid=$(mariadb_pid "$dir"); then
		die "a MariaDB server is already running in $dir (pid $pid); run: scripts/testdb.sh stop $dir"
	fi
	# Leftovers of a killed server: the socket lock names a dead (maybe zombie)
	# pid, which would make mariadbd refuse the socket.
	rm -f -- "$dir/mysqld.pid" "$sock" "$sock.lock"

	# A private tmpdir: a starting mariadbd deletes every #sql* file in its
	# tmpdir, which breaks any other server (or mariadb-install-db) that is
	# using a shared /tmp at that moment.
	mkdir -p -m 700 -- "$dir/tmp"

	# The data dir is built under another name and renamed when complete, so
	# an interrupted install is redone rather than started.
	local fresh=0
	if [[ ! -d $dir/data ]]; then
		rm -rf -- "$dir/data.new"
		if ! mariadb-install-db --no-defaults --datadir="$dir/data.new" --user=root \
			--auth-root-authentication-method=normal --skip-test-db \
			--tmpdir="$dir/tmp" >"$dir/install.log" 2>&1; then
			# The cause is at the top, followed by a page of generic advice.
			sed '/^Installation of system tables failed/q' -- "$dir/install.log" | tail -n 30 >&2 || true
			rm -rf -- "$dir/data.new"
			die "mariadb-install-db failed (log: $dir/install.log)"
		fi
		mv -- "$dir/data.new" "$dir/data"
		fresh=1
	fi

	local port fixed=0
	if [[ -s $dir/port ]]; then
		port=$(<"$dir/port")
		fixed=1
	else
		port=$(free_port)
	fi

	local extra=()
	read -r -a extra <<<"${MARIADB_EXTRA_ARGS:-}"

	local attempt log_start started deadline
	for ((attempt = 1; ; attempt++)); do
		log_start=$(line_count "$dir/error.log")
		# setsid: own session, so the server outlives this script and ignores
		# signals sent to the caller's process group. All fds are redirected so
		# a caller reading our stdout/stderr through a pipe does not wait for it.
		setsid mariadbd --no-defaults --user=root \
			--datadir="$dir/data" \
			--tmpdir="$dir/tmp" \
			--socket="$sock" \
			--port="$port" --bind-address=127.0.0.1 \
			--pid-file="$dir/mysqld.pid" \
			--log-error="$dir/error.log" \
			--server-id="$server_id" \
			--log-bin="$dir/data/binlog" \
			--binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
			--log-slave-updates=ON --gtid-strict-mode=ON \
			--innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
			--skip-name-resolve \
			--character-set-server=utf8mb4 --collation-server=utf8mb4_bin \
			--max-allowed-packet=64M \
			"${extra[@]}" \
			</dev/null >>"$dir/mysqld.out" 2>&1 &
		pid=$!

		started=0
		deadline=$((SECONDS + START_TIMEOUT))
		while ((SECONDS < deadline)); do
			if mariadb-admin --no-defaults -uroot --socket="$sock" --connect-timeout=1 ping >/dev/null 2>&1; then
				started=1
				break
			fi
			alive "$pid" || break
			sleep 0.05
		done
		((started)) && break

		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone 5 "$pid" || true
		fi
		if ((!fixed && attempt < PORT_ATTEMPTS)) &&
			new_log_lines "$dir/error.log" "$log_start" | grep -qiE 'address already in use|bind on tcp/ip port'; then
			echo "testdb.sh: port $port was taken, trying another" >&2
			port=$(free_port)
			continue
		fi
		{
			echo "--- tail of $dir/error.log:"
			new_log_lines "$dir/error.log" "$log_start" | tail -n 30
		} >&2
		die "MariaDB in $dir did not answer within ${START_TIMEOUT}s on port $port"
	done
	echo "$port" >"$dir/port"

	if ((fresh)) || [[ ! -e $dir/setup.done ]]; then
		local client=(mariadb --no-defaults -uroot --socket="$sock" --batch --skip-column-names)
		# mariadb-install-db normally creates root@127.0.0.1 too; create it
		# only if TCP login does not work yet. sql_log_bin=0 keeps the binlog
		# of a new server empty.
		if ! mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" --protocol=TCP \
			--connect-timeout=5 -e 'SELECT 1' >/dev/null 2>&1; then
			"${client[@]}" -e "SET SESSION sql_log_bin=0;
				CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
				GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" >&2 ||
				die "creating root@127.0.0.1 failed"
		fi
		"${client[@]}" -e "SET SESSION sql_log_bin=0; CREATE DATABASE IF NOT EXISTS app;" >&2 ||
			die "creating database app failed"
		: >"$dir/setup.done"
	fi
	echo "PORT=$port"
}

stop_mariadb() {
	local dir=$1 pid
	if pid=$(mariadb_pid "$dir"); then
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_gone "$STOP_TIMEOUT" "$pid"; then
			echo "testdb.sh: MariaDB (pid $pid) did not stop within ${STOP_TIMEOUT}s, sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone 10 "$pid" || die "MariaDB (pid $pid) survived SIGKILL"
		fi
	fi
}

kill_mariadb() {
	local dir=$1 pid
	if pid=$(mariadb_pid "$dir"); then
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone 10 "$pid" || die "MariaDB (pid $pid) survived SIGKILL"
	fi
}

# ------------------------------------------------------------- PostgreSQL

pg() { runuser -u postgres -- "$@"; }

postgres_pid() { pid_from "$1/data/postmaster.pid" postgres postmaster; }

# clean_postgres_locks DIR: removes the lock files of a dead postmaster. They
# hold its pid, and a zombie pid still passes PostgreSQL's kill(pid, 0) test.
clean_postgres_locks() {
	rm -f -- "$1/data/postmaster.pid" "$1"/.s.PGSQL.*.lock "$1"/.s.PGSQL.*
}

ensure_postgres() {
	local tool
	if [[ ! -x $PG_BIN/initdb ]]; then
		echo "testdb.sh: $PG_BIN/initdb not found, installing postgresql-15" >&2
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 postgresql-client-15; } >&2 ||
			die "installing postgresql-15 failed; run: apt-get install -y postgresql-15"
		# The package may start its own cluster on 5432; it is left alone.
	fi
	for tool in initdb pg_ctl postgres; do
		[[ -x $PG_BIN/$tool ]] || die "$PG_BIN/$tool not found; run: apt-get install -y postgresql-15"
	done
	command -v psql >/dev/null 2>&1 || [[ -x $PG_BIN/psql ]] ||
		die "psql not found; run: apt-get install -y postgresql-client-15"
	if ! id -u postgres >/dev/null 2>&1; then
		useradd -r -m postgres || die "creating the postgres OS user failed"
	fi
}

psql_cmd() {
	if command -v psql >/dev/null 2>&1; then psql "$@"; else "$PG_BIN/psql" "$@"; fi
}

start_postgres() {
	[[ $# -eq 1 ]] || usage
	ensure_postgres
	local dir
	dir=$(abs_dir "$1")
	# PostgreSQL refuses to run as root and wants its directories private.
	chown postgres:postgres "$dir"
	chmod 700 "$dir"
	pg test -w "$dir" -a -x "$dir" ||
		die "user postgres cannot use $dir (a parent directory is closed to it?); pick a DIR under /tmp"

	local pid
	if pid=$(postgres_pid "$dir"); then
		die "a PostgreSQL server is already running in $dir (pid $pid); run: scripts/testdb.sh stop $dir"
	fi
	clean_postgres_locks "$dir"

	local port fixed=0 fresh=0
	if [[ -s $dir/port ]]; then
		port=$(<"$dir/port")
		fixed=1
	else
		port=$(free_port)
	fi

	# As for MariaDB, the data dir gets its name only once it is complete.
	if [[ ! -d $dir/data ]]; then
		rm -rf -- "$dir/data.new"
		if ! pg "$PG_BIN/initdb" -D "$dir/data.new" -U postgres --auth=trust -E UTF8 \
			--locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
			tail -n 30 -- "$dir/initdb.log" >&2 || true
			rm -rf -- "$dir/data.new"
			die "initdb failed (log: $dir/initdb.log)"
		fi
		cat >>"$dir/data.new/postgresql.conf" <<EOF

# added by scripts/testdb.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
fsync = off
full_page_writes = off
# synchronous_commit stays on: with fsync=off a commit costs only a write()
# into the OS page cache, and with it off a SIGKILL (scripts/testdb.sh kill)
# loses the last ~0.6 s of committed transactions, which breaks crash tests.
synchronous_commit = on
EOF
		cat >>"$dir/data.new/pg_hba.conf" <<EOF

# added by scripts/testdb.sh
host    all             all             127.0.0.1/32            trust
host    replication     all             127.0.0.1/32            trust
EOF
		mv -- "$dir/data.new" "$dir/data"
		fresh=1
	fi

	local attempt log_start
	for ((attempt = 1; ; attempt++)); do
		log_start=$(line_count "$dir/server.log")
		# pg_ctl detaches the postmaster itself (own session, stdin from
		# /dev/null, output to server.log).
		if pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$START_TIMEOUT" start >&2; then
			break
		fi
		if pid=$(postgres_pid "$dir"); then
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone 5 "$pid" || true
		fi
		clean_postgres_locks "$dir"
		if ((!fixed && attempt < PORT_ATTEMPTS)) &&
			new_log_lines "$dir/server.log" "$log_start" | grep -qiE 'could not bind|address already in use'; then
			echo "testdb.sh: port $port was taken, trying another" >&2
			port=$(free_port)
			echo "port = $port" >>"$dir/data/postgresql.conf"
			continue
		fi
		{
			echo "--- tail of $dir/server.log:"
			new_log_lines "$dir/server.log" "$log_start" | tail -n 30
		} >&2
		die "PostgreSQL in $dir did not start on port $port"
	done
	echo "$port" >"$dir/port"
	chown postgres:postgres "$dir/port"

	if ((fresh)) || [[ ! -e $dir/setup.done ]]; then
		local psql=(psql_cmd -X -q -A -t -h 127.0.0.1 -p "$port" -U postgres -d postgres)
		local have
		have=$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'app'") ||
			die "connecting to PostgreSQL on 127.0.0.1:$port failed"
		if [[ -z $have ]]; then
			"${psql[@]}" -c 'CREATE DATABASE app' >&2 || die "creating database app failed"
		fi
		: >"$dir/setup.done"
		chown postgres:postgres "$dir/setup.done"
	fi
	echo "PORT=$port"
}

stop_postgres() {
	local dir=$1 pid
	if pid=$(postgres_pid "$dir"); then
		if ! pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t "$STOP_TIMEOUT" stop >&2; then
			echo "testdb.sh: pg_ctl stop failed, sending SIGKILL" >&2
			kill_postgres "$dir"
			return
		fi
		wait_gone 10 "$pid" || die "PostgreSQL (pid $pid) is still running after pg_ctl stop"
	fi
	clean_postgres_locks "$dir"
}

kill_postgres() {
	local dir=$1 pid children
	if pid=$(postgres_pid "$dir"); then
		# Freeze the postmaster so it forks no new child, then kill it and all
		# its children at once (a lone backend holding the shared memory would
		# make the next start fail).
		kill -STOP "$pid" 2>/dev/null || true
		children=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
		# shellcheck disable=SC2086 # word splitting of the pid list is intended
		kill -KILL "$pid" $children 2>/dev/null || true
		# shellcheck disable=SC2086
		wait_gone 10 "$pid" $children || die "PostgreSQL (pid $pid) survived SIGKILL"
	fi
	clean_postgres_locks "$dir"
}

# ------------------------------------------------------------------- stop

# stop_or_kill ACTION DIR: ACTION is stop or kill; works out which server
# lives in DIR. Nothing to do (no DIR, no server) is success.
stop_or_kill() {
	[[ $# -eq 2 ]] || usage
	local action=$1 dir=$2
	[[ -d $dir ]] || return 0
	dir=$(cd -- "$dir" && pwd -P)
	if [[ -f $dir/data/PG_VERSION ]]; then
		"${action}_postgres" "$dir"
	elif [[ -d $dir/data/mysql || -f $dir/mysqld.pid ]]; then
		"${action}_mariadb" "$dir"
	fi
}

main() {
	[[ $# -ge 1 ]] || usage
	local cmd=$1
	shift
	case $cmd in
	start-mariadb) start_mariadb "$@" ;;
	start-postgres) start_postgres "$@" ;;
	stop) [[ $# -eq 1 ]] || usage; stop_or_kill stop "$1" ;;
	kill) [[ $# -eq 1 ]] || usage; stop_or_kill kill "$1" ;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"

#!/usr/bin/env bash
# What a route costs a write-heavy application, measured with pgbench: 16
# clients, each transaction a one-row UPDATE of a 10,000-row table, with no
# trigger, with a minimal trigger that emits one logical decoding message,
# and with a kit route under each transport, in rounds.
#
#   bench/pgbench_update.sh "$URL" [rounds] [seconds]
#
# $URL: a database with the SQL kit, read by a pgbroadcast node on its default
# `--transport auto` (`pgbroadcast serve` prints the URL of its private
# Postgres), as a superuser. The database's pgbroadcast.transport is set and
# reset here.
set -euo pipefail
url=$1
rounds=${2:-3}
seconds=${3:-12}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
sql() { PGOPTIONS="-c client_min_messages=warning" "$bin/psql" "$url" -qAt -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }
script=$(mktemp)
trap 'rm -f "$script"' EXIT
printf '\\set id random(1, 10000)\nupdate pgbench_pb set v = v + 1 where id = :id;\n' >"$script"
sql "drop table if exists pgbench_pb; create table pgbench_pb (id int primary key, v int not null default 0);
     insert into pgbench_pb select g from generate_series(1, 10000) g;
     create or replace function pgbench_min_emit() returns trigger language plpgsql as
       \$\$ begin perform pg_logical_emit_message(true, 'pgbench_min', '{\"a\":1}'); return null; end \$\$;"
dbname=$("$bin/psql" "$url" -qAt -c "select current_database()")
tps() { "$bin/pgbench" -n -c 16 -j 4 -T "$seconds" -f "$script" "$url" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'; }
# The node's WAL stream (its `auto` transport starts it once the database
# asks for wal, then keeps it): running from the start, every column is
# measured with a live logical replication consumer.
sql "alter database \"$dbname\" set pgbroadcast.transport = 'wal'"
sleep 11
echo "round,none,minimal_trigger,kit_notify,kit_wal"
for r in $(seq "$rounds"); do
  none=$(tps)
  sql "create trigger pgbench_min after update on pgbench_pb for each row execute function pgbench_min_emit()"
  minimal=$(tps)
  sql "drop trigger pgbench_min on pgbench_pb; select broadcast.enable('pgbench_pb', 'pgbench_pb')"
  sql "alter database \"$dbname\" set pgbroadcast.transport = 'notify'"
  notify=$(tps)
  sql "alter database \"$dbname\" set pgbroadcast.transport = 'wal'"
  sleep 11  # the node's auto transport notices within --queue-check (10 s)
  wal=$(tps)
  sql "alter database \"$dbname\" reset pgbroadcast.transport; select broadcast.disable('pgbench_pb')"
  echo "$r,$none,$minimal,$notify,$wal"
done
sql "drop table pgbench_pb; drop function pgbench_min_emit()"

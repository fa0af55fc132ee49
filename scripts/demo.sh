#!/usr/bin/env bash
# A throwaway Postgres, pgmlcat in front of it, queries, training and
# predictions through it, and pgbench.
# Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet

PG_BIN=/usr/lib/postgresql/15/bin
TMP=$(mktemp -d /tmp/pgmlcat-demo.XXXXXX)
chmod 777 "$TMP"
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
PROXY_PORT=$(free_port)
cleanup() {
  [[ -n "${PROXY_PID:-}" ]] && kill "$PROXY_PID" 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL 15 on port $PG_PORT"
as_pg "$PG_BIN/initdb" -D "$TMP/data" -A trust -U postgres --no-sync >/dev/null
cat >>"$TMP/data/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
fsync = off
CONF
as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/pg.log" -w start >/dev/null
psql -X -q -h "$TMP" -p "$PG_PORT" -U postgres -c "create role app login password 'app_pw'" -c "create database app owner app"

echo "== starting pgmlcat on port $PROXY_PORT"
sed -e "s/^port = 6432/port = $PROXY_PORT/" -e "s/5432, \"primary\"/$PG_PORT, \"primary\"/" pgcat.toml >"$TMP/pgcat.toml"
./target/release/pgmlcat "$TMP/pgcat.toml" --log-level warn &
PROXY_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done

export PGPASSWORD=app_pw
q() { echo "app=> $1"; psql -X -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app -c "$1"; }
q "select version()"
q "create table users(id int primary key, company_id int, location int, total_purchases int, bought bool)"
q "insert into users select g, g % 10, g % 5, (g * 7) % 23, ((g * 7) % 23 > 11) <> (g % 5 = 0) from generate_series(1, 5000) g"
echo "== in-line ML: the database has no extension; pgmlcat answers pgml.*"
q "create view purchases as select location, total_purchases, bought from users"
q "select * from pgml.train('Probability of buying', 'classification', 'purchases', 'bought', algorithm => 'lightgbm')"
q "select id, algorithm, round((metrics->>'f1')::numeric, 3) as f1 from pgml.models"
q "SELECT *, pgml.predict('Probability of buying', ARRAY[location, total_purchases]) AS likely_to_buy FROM users WHERE company_id = 5 ORDER BY likely_to_buy DESC LIMIT 5"
echo "== examples/iris_classification.sql"
psql -X -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app -f examples/iris_classification.sql
echo "== pgbench -S through pgmlcat (transaction pooling, 32 clients on 10 server connections)"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PROXY_PORT" -U app -i -s 1 -q app >/dev/null 2>&1
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PROXY_PORT" -U app -S -c 32 -j 2 -T 3 -M prepared app 2>&1 | grep -E "tps|failed"
echo "== done; cleaning up"

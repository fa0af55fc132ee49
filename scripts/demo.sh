#!/usr/bin/env bash
# A throwaway Postgres, pgmlcat in front of it, queries, training and
# predictions through it, what a model learned (feature importance), drift
# against newer data, scheduled retraining, the web dashboard, and pgbench.
# Everything is removed at the end.
#
#   DEMO_DASHBOARD_SECONDS=120 scripts/demo.sh   # keep the dashboard up 2 minutes at the end
#   PGMLCAT_BIN=target/debug/pgmlcat scripts/demo.sh   # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ -z ${PGMLCAT_BIN:-} ]]; then
  cargo build --release --quiet
  PGMLCAT_BIN=./target/release/pgmlcat
fi

PG_BIN=/usr/lib/postgresql/15/bin
TMP=$(mktemp -d /tmp/pgmlcat-demo.XXXXXX)
chmod 777 "$TMP"
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
PROXY_PORT=$(free_port)
DASHBOARD_PORT=$(free_port)
ADMIN_PW="demo-$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
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

echo "== starting pgmlcat on port $PROXY_PORT, its dashboard on port $DASHBOARD_PORT"
# pgcat.toml with this demo's ports, the dashboard on, and an admin password
# of its own (the dashboard refuses to start without one).
sed -e "/^dashboard_port *=/d" \
  -e "s/^port = 6432\$/port = $PROXY_PORT\ndashboard_port = $DASHBOARD_PORT/" \
  -e "s/^admin_password = .*/admin_password = \"$ADMIN_PW\"/" \
  -e "s/5432, \"primary\"/$PG_PORT, \"primary\"/" pgcat.toml >"$TMP/pgcat.toml"
"$PGMLCAT_BIN" "$TMP/pgcat.toml" --log-level warn &
PROXY_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done
echo "   dashboard: http://127.0.0.1:$DASHBOARD_PORT/ (user admin, password $ADMIN_PW), up while the demo"
echo "   runs; DEMO_DASHBOARD_SECONDS=N keeps it up N seconds after the last step"

export PGPASSWORD=app_pw
q() { echo "app=> $1"; psql -X -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app -c "$1"; }
admin() { echo "pgmlcat=# $1"; PGPASSWORD=$ADMIN_PW psql -X -h 127.0.0.1 -p "$PROXY_PORT" -U admin -d pgmlcat -c "$1"; }
q "select version()"
# Who buys: mostly those with many purchases, except at location 0, and
# 15% of the answers flipped at random (a fixed hash of the id): a rule to
# learn, and noise no model can (f1 well below 1).
q "create table users(id int primary key, company_id int, location int, total_purchases int, bought bool)"
q "insert into users select g, g % 10, g % 5, (g * 7) % 23, (((g * 7) % 23 > 11) <> (g % 5 = 0)) <> (abs(hashint4(g)) % 100 < 15) from generate_series(1, 5000) g"
echo "== in-line ML: the database has no extension; pgmlcat answers pgml.*"
q "create view purchases as select location, total_purchases, bought from users"
q "select * from pgml.train('Probability of buying', 'classification', 'purchases', 'bought', algorithm => 'lightgbm')"
q "SELECT *, pgml.predict('Probability of buying', ARRAY[location, total_purchases]) AS likely_to_buy FROM users WHERE company_id = 5 ORDER BY likely_to_buy DESC LIMIT 5"
echo "== a dataset that ships with pgmlcat: scikit-learn's breast cancer (569 tumours, 30 measurements)"
q "SELECT * FROM pgml.load_dataset('breast_cancer')"
q "SELECT * FROM pgml.train('Breast cancer', 'classification', 'pgml.breast_cancer', 'malignant', algorithm => 'lightgbm')"
q "SELECT p.name AS project, m.id, m.algorithm, round((m.metrics->>'f1')::numeric, 3) AS f1, round((m.metrics->>'roc_auc')::numeric, 3) AS roc_auc FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id ORDER BY m.id"
echo "== what the models learned: feature importance, stored at training"
q "SELECT * FROM pgml.feature_importance('Probability of buying')"
echo "== drift: next month's customers buy more; compared with the rows the model was trained on"
q "create table purchases_next_month as select location, least(total_purchases + 6, 25) as total_purchases, bought from purchases"
q "SELECT * FROM pgml.drift('Probability of buying')"
q "SELECT * FROM pgml.drift('Probability of buying', 'purchases_next_month')"
echo "== scheduled retraining: every 5 seconds, on next month's rows, when they have drifted"
q "SELECT * FROM pgml.schedule('Probability of buying', '5 seconds', 'purchases_next_month', 'drift')"
echo "(waiting 12 seconds for the scheduler)"
sleep 12
q "SELECT due, outcome, model_id, detail FROM pgml.schedule_runs ORDER BY id"
q "SELECT d.name AS project, d.id, d.algorithm, s.relation_name AS trained_on, round((m.metrics->>'f1')::numeric, 3) AS f1 FROM pgml.deployed_models d JOIN pgml.models m ON m.id = d.id JOIN pgml.snapshots s ON s.id = m.snapshot_id ORDER BY d.id"
admin "SHOW SCHEDULES"
admin "SHOW PROJECTS"
echo "== examples/iris_classification.sql"
psql -X -h 127.0.0.1 -p "$PROXY_PORT" -U app -d app -f examples/iris_classification.sql
echo "== pgbench -S through pgmlcat (transaction pooling, 32 clients on 10 server connections)"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PROXY_PORT" -U app -i -s 1 -q app >/dev/null 2>&1
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PROXY_PORT" -U app -S -c 32 -j 2 -T 3 -M prepared app 2>&1 | grep -E "tps|failed"

echo "== the dashboard: http://127.0.0.1:$DASHBOARD_PORT/ (user admin, password $ADMIN_PW)"
python3 - "$DASHBOARD_PORT" "$ADMIN_PW" <<'PY'
import base64, sys, urllib.request, urllib.error
port, pw = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/"
try:
    urllib.request.urlopen(url, timeout=10)
except urllib.error.HTTPError as e:
    print(f"GET {url} without credentials: {e.code} ({e.headers.get('WWW-Authenticate')})")
req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(f"admin:{pw}".encode()).decode()})
with urllib.request.urlopen(req, timeout=10) as r:
    body = r.read().decode()
    print(f"GET {url} as admin: {r.status}, {len(body)} bytes, Content-Security-Policy: {r.headers.get('Content-Security-Policy')}")
PY
if [[ -x /usr/bin/chromium ]]; then
  mkdir -p target/demo
  /usr/bin/chromium --headless --no-sandbox --disable-gpu --user-data-dir="$TMP/chromium" \
    --screenshot="$PWD/target/demo/dashboard.png" --window-size=1400,1000 \
    "http://admin:$ADMIN_PW@127.0.0.1:$DASHBOARD_PORT/" >/dev/null 2>&1 &&
    echo "(a screenshot of it: target/demo/dashboard.png)"
fi
if [[ ${DEMO_DASHBOARD_SECONDS:-0} -gt 0 ]]; then
  echo "(open it in a browser on this machine: it stays up ${DEMO_DASHBOARD_SECONDS} seconds)"
  sleep "$DEMO_DASHBOARD_SECONDS"
fi
echo "== done; cleaning up"

#!/bin/bash
# Run once by the postgres image's entrypoint (docker-entrypoint-initdb.d) when
# the primary's data directory is first initialised. Creates the streaming
# replication role and lets it connect for replication.
#
# The entrypoint sources this file when it is not executable, so no `exit`
# and no `set -u` here.
set -e

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set=repl_user="${REPLICATION_USER:-replicator}" \
     --set=repl_pw="${REPLICATION_PASSWORD:-replicator_pw}" <<'EOSQL'
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_pw';
EOSQL

echo "host replication ${REPLICATION_USER:-replicator} all scram-sha-256" >> "$PGDATA/pg_hba.conf"

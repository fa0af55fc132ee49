#!/bin/bash
# Entrypoint of the streaming replica: when its data directory is empty, clone
# the primary with pg_basebackup -R (which writes standby.signal and
# primary_conninfo), then hand over to the postgres image's own entrypoint,
# which finds an existing cluster and just starts it as a hot standby.
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PRIMARY_HOST="${PRIMARY_HOST:-primary}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
REPLICATION_PASSWORD="${REPLICATION_PASSWORD:-replicator_pw}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "replica: waiting for primary $PRIMARY_HOST:$PRIMARY_PORT"
    until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER"; do
        sleep 1
    done

    echo "replica: pg_basebackup from $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA"
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    # -R writes standby.signal and primary_conninfo (password included) to
    # postgresql.auto.conf; -X stream copies the WAL needed to be consistent.
    gosu postgres env PGPASSWORD="$REPLICATION_PASSWORD" \
        pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" \
        -D "$PGDATA" -R -X stream --checkpoint=fast --no-password
    echo "replica: base backup done"
fi

exec docker-entrypoint.sh "$@"

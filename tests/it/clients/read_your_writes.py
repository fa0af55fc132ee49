"""psycopg 3's or asyncpg's reads right after their own writes, for
pgmlcat's read-your-writes routing: the pairs ReadYourWrites.java makes.
A writer inserts N ids in turn, every other one in a transaction of its
own, and reads each back at once with a statement that also says whether a
replica answered; a bystander that never writes reads pg_is_in_recovery()
after every 4th pair. Twice every 20 pairs (before an autocommit write and
before a transaction) the writer first waits until its reads go back to a
replica, so that a write the router missed cannot hide behind the writer's
previous, still unreplayed one.

psycopg 3 (autocommit connections): each parameterised statement goes as
one unnamed Parse/Bind/Describe/Execute/Sync batch until its
prepare_threshold (default 5), named prepared after; the transaction is
`with conn.transaction()` (BEGIN and COMMIT as simple queries). asyncpg
prepares each statement in a round trip of its own (Parse/Describe/Sync),
then runs it with Bind/Execute/Sync; its transaction is
`async with conn.transaction()`.

Prints "stale=S writer_on_replica=W bystander_on_primary=P
bystander_reads=R stale_ids=..." ("tx" after ids written in a transaction).
Any driver error ends it non-zero.

Usage: read_your_writes.py psycopg|asyncpg N FIRST_ID CONNINFO [READ_CONNINFO]
(libpq key=value form). With READ_CONNINFO the writer's reads and the
bystander go there: directly, writes on the primary, reads on a replica.
"""
import asyncio
import sys
import time

INSERT = "insert into t values ({})"
READ = "select count(*), pg_is_in_recovery() from t where id = {}"
LOOK = "select pg_is_in_recovery()"


class Pairs:
    """The counts the program prints."""

    def __init__(self):
        self.stale = self.writer_on_replica = 0
        self.bystander_on_primary = self.bystander_reads = 0
        self.stale_ids = []

    def read(self, id_, in_tx, count, on_replica):
        if count == 0:
            self.stale += 1
            self.stale_ids.append(f"{id_}tx" if in_tx else str(id_))
        self.writer_on_replica += int(on_replica)

    def look(self, on_replica):
        self.bystander_on_primary += int(not on_replica)
        self.bystander_reads += 1

    def line(self):
        return (
            f"stale={self.stale} writer_on_replica={self.writer_on_replica} "
            f"bystander_on_primary={self.bystander_on_primary} "
            f"bystander_reads={self.bystander_reads} stale_ids={','.join(self.stale_ids)}"
        )


def settle_needed(i):
    return i % 20 in (0, 11)


def with_psycopg(n, first, conninfo, read_conninfo):
    import psycopg

    pairs = Pairs()
    writer = psycopg.connect(conninfo, autocommit=True)
    reader = psycopg.connect(read_conninfo, autocommit=True) if read_conninfo else writer
    bystander = psycopg.connect(read_conninfo or conninfo, autocommit=True)

    def read_back(id_):
        return reader.execute(READ.format("%s"), [id_]).fetchone()

    for i in range(n):
        id_ = first + i
        in_tx = i % 2 == 1
        if settle_needed(i):
            deadline = time.monotonic() + 5
            while not read_back(id_ - 1)[1]:
                if time.monotonic() > deadline:
                    sys.exit(f"the writer's reads never went back to a replica after {id_ - 1}")
                time.sleep(0.02)
        if in_tx:
            with writer.transaction():
                writer.execute(INSERT.format("%s"), [id_])
        else:
            writer.execute(INSERT.format("%s"), [id_])
        pairs.read(id_, in_tx, *read_back(id_))
        if i % 4 == 3:
            pairs.look(bystander.execute(LOOK).fetchone()[0])
    for c in {writer, reader, bystander}:
        c.close()
    return pairs


async def with_asyncpg(n, first, conninfo, read_conninfo):
    import asyncpg

    async def connect(info):
        kv = dict(part.split("=", 1) for part in info.split())
        return await asyncpg.connect(
            host=kv["host"], port=int(kv["port"]), user=kv["user"],
            password=kv["password"], database=kv["dbname"], ssl=False,
        )

    pairs = Pairs()
    writer = await connect(conninfo)
    reader = await connect(read_conninfo) if read_conninfo else writer
    bystander = await connect(read_conninfo or conninfo)

    async def read_back(id_):
        return tuple(await reader.fetchrow(READ.format("$1"), id_))

    for i in range(n):
        id_ = first + i
        in_tx = i % 2 == 1
        if settle_needed(i):
            deadline = time.monotonic() + 5
            while not (await read_back(id_ - 1))[1]:
                if time.monotonic() > deadline:
                    sys.exit(f"the writer's reads never went back to a replica after {id_ - 1}")
                await asyncio.sleep(0.02)
        if in_tx:
            async with writer.transaction():
                await writer.execute(INSERT.format("$1"), id_)
        else:
            await writer.execute(INSERT.format("$1"), id_)
        pairs.read(id_, in_tx, *(await read_back(id_)))
        if i % 4 == 3:
            pairs.look(await bystander.fetchval(LOOK))
    for c in {writer, reader, bystander}:
        await c.close()
    return pairs


def main():
    driver, n, first, conninfo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    read_conninfo = sys.argv[5] if len(sys.argv) > 5 else None
    if driver == "psycopg":
        pairs = with_psycopg(n, first, conninfo, read_conninfo)
    else:
        pairs = asyncio.run(with_asyncpg(n, first, conninfo, read_conninfo))
    print(pairs.line())


main()

// pgx v4's reads right after its own writes, for pgmlcat's read-your-writes
// routing. A writer connection inserts N ids in turn with an INSERT pgx
// prepares and caches (the extended protocol and the statement cache in
// prepare mode, pgx's defaults), every other one in a transaction of its
// own (conn.Begin ... Commit: pgx sends `begin` and `commit` as simple
// Queries), and reads each id back at once with a cached prepared SELECT
// that also says whether a replica answered. A bystander connection that
// never writes reads pg_is_in_recovery() after every 4th pair, while the
// writer's commits are still unreplayed on lagging replicas.
//
// A write whose commit the router missed would hide behind the writer's
// previous, still unreplayed one (its reads wait for that one too), so
// twice every 20 pairs, once before an autocommit write and once before a
// transaction, the writer first waits until its reads go back to a
// replica: nothing of its own left to wait for, the next read is fresh
// only if that very write was noticed.
//
// Prints one line, `stale=S writer_on_replica=W bystander_on_primary=P
// bystander_reads=R stale_ids=I`: reads that missed the row just written,
// the writer's reads a replica answered, the bystander's reads the primary
// answered, how many the bystander made, and the ids read stale ("tx" after
// those written in a transaction). Any driver error ends it non-zero.
//
// Usage: pgx_read_your_writes N FIRST_ID CONNSTRING [READ_CONNSTRING]
// With READ_CONNSTRING the writer's reads go through a second connection to
// it, and the bystander connects there too: directly, writes on the primary
// and reads on a replica, which shows what staleness looks like.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgconn/stmtcache"
	"github.com/jackc/pgx/v4"
)

const (
	insertSQL = "insert into t values ($1)"
	readSQL   = "select count(*), pg_is_in_recovery() from t where id = $1"
	lookSQL   = "select pg_is_in_recovery()"
	// How long the writer's reads may take to go back to a replica.
	settleWithin = 5 * time.Second
)

var ctx = context.Background()

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func number(arg string) int {
	n, err := strconv.Atoi(arg)
	if err != nil {
		fail("argument "+arg, err)
	}
	return n
}

func connect(connString string) *pgx.Conn {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		fail("parse config", err)
	}
	// pgx's default, said out loud: statements with arguments go through
	// Parse/Bind/Execute, never interpolated into a simple Query.
	cfg.PreferSimpleProtocol = false
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		fail("connect", err)
	}
	if c := conn.StatementCache(); c == nil || c.Mode() != stmtcache.ModePrepare {
		fail("statement cache", fmt.Errorf("not in prepare mode"))
	}
	return conn
}

// readBack reads id back: the rows found, whether a replica answered.
func readBack(reader *pgx.Conn, id int32) (int64, bool) {
	var count int64
	var onReplica bool
	if err := reader.QueryRow(ctx, readSQL, id).Scan(&count, &onReplica); err != nil {
		fail(fmt.Sprintf("read back %d", id), err)
	}
	return count, onReplica
}

// settle waits until a replica answers the writer's reads again.
func settle(reader *pgx.Conn, lastID int32) {
	deadline := time.Now().Add(settleWithin)
	for {
		if _, onReplica := readBack(reader, lastID); onReplica {
			return
		}
		if time.Now().After(deadline) {
			fail("settle", fmt.Errorf("the writer's reads never went back to a replica after id %d", lastID))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func main() {
	if len(os.Args) < 4 {
		fail("usage", fmt.Errorf("pgx_read_your_writes N FIRST_ID CONNSTRING [READ_CONNSTRING]"))
	}
	n, first := number(os.Args[1]), number(os.Args[2])
	writer := connect(os.Args[3])
	defer writer.Close(ctx)
	readConn := os.Args[3]
	reader := writer
	if len(os.Args) > 4 {
		readConn = os.Args[4]
		reader = connect(readConn)
		defer reader.Close(ctx)
	}
	bystander := connect(readConn)
	defer bystander.Close(ctx)

	stale, writerOnReplica, bystanderOnPrimary, bystanderReads := 0, 0, 0, 0
	staleIDs := []string{}
	for i := 0; i < n; i++ {
		id := int32(first + i)
		if i%20 == 0 || i%20 == 11 {
			settle(reader, id-1)
		}
		if i%2 == 1 {
			tx, err := writer.Begin(ctx)
			if err != nil {
				fail(fmt.Sprintf("begin before %d", id), err)
			}
			if _, err := tx.Exec(ctx, insertSQL, id); err != nil {
				fail(fmt.Sprintf("insert %d in a transaction", id), err)
			}
			if err := tx.Commit(ctx); err != nil {
				fail(fmt.Sprintf("commit of %d", id), err)
			}
		} else if _, err := writer.Exec(ctx, insertSQL, id); err != nil {
			fail(fmt.Sprintf("insert %d", id), err)
		}
		count, onReplica := readBack(reader, id)
		if count == 0 {
			stale++
			label := fmt.Sprint(id)
			if i%2 == 1 {
				label += "tx"
			}
			staleIDs = append(staleIDs, label)
		}
		if onReplica {
			writerOnReplica++
		}
		if i%4 == 3 {
			var inRecovery bool
			if err := bystander.QueryRow(ctx, lookSQL).Scan(&inRecovery); err != nil {
				fail("bystander read", err)
			}
			if !inRecovery {
				bystanderOnPrimary++
			}
			bystanderReads++
		}
	}
	// Every statement was prepared under a name and cached, not run once
	// unnamed: the INSERT and the SELECT (on one connection or two).
	cached := map[*pgx.Conn]int{}
	cached[writer]++
	cached[reader]++
	for conn, want := range cached {
		if got := conn.StatementCache().Len(); got != want {
			fail("statement cache", fmt.Errorf("%d statements cached, expected %d", got, want))
		}
	}
	fmt.Printf("stale=%d writer_on_replica=%d bystander_on_primary=%d bystander_reads=%d stale_ids=%s\n",
		stale, writerOnReplica, bystanderOnPrimary, bystanderReads, strings.Join(staleIDs, ","))
}

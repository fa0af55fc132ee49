// pgx v4 with a statement cache of 2 in prepare mode: every query it runs
// is a named protocol statement, and making room for a new one evicts the
// oldest with SQL `deallocate lrupsc_<n>_<k>` (a simple Query, inside the
// transaction when there is one). Six distinct queries in rotation, outside
// and inside a transaction, while a second connection keeps one server of
// the pool busy every other round. Prints what the client saw as JSON
// lines, then `backends: <n>` (how many server backends the queries ran
// on), which the Rust test compares apart.
//
// Usage: pgx_deallocate CONNSTRING
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/jackc/pgx/v4"
)

var ctx = context.Background()

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("json", err)
	}
	fmt.Println(string(b))
}

// querier is what *pgx.Conn and pgx.Tx have in common here.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...interface{}) pgx.Row
}

// Six distinct statements: with a cache of 2, each use of the next one
// evicts (DEALLOCATEs) the least recently used.
var queries = []string{
	"select $1::int + 1",
	"select $1::int * 2",
	"select $1::int - 3",
	"select ($1::int)::text || '!'",
	"select count(*)::int + $1::int from dd",
	"select coalesce(max(x), 0) + $1::int from dd",
}

func rotate(q querier, label string, rounds int, pids map[int32]bool) {
	for r := 0; r < rounds; r++ {
		for i, sql := range queries {
			var v interface{}
			if err := q.QueryRow(ctx, sql, 10*r+i).Scan(&v); err != nil {
				fail(fmt.Sprintf("%s round %d query %d (%s)", label, r, i, sql), err)
			}
			emit(map[string]interface{}{"at": label, "round": r, "q": i, "v": v})
		}
		var pid int32
		if err := q.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
			fail("pid", err)
		}
		pids[pid] = true
	}
}

func main() {
	conn, err := pgx.Connect(ctx, os.Args[1])
	if err != nil {
		fail("connect", err)
	}
	defer conn.Close(ctx)
	holder, err := pgx.Connect(ctx, os.Args[1])
	if err != nil {
		fail("connect holder", err)
	}
	defer holder.Close(ctx)

	if _, err := conn.Exec(ctx, "delete from dd"); err != nil {
		fail("delete", err)
	}
	pids := map[int32]bool{}

	// Outside a transaction: each statement is a transaction of its own,
	// and every other round the other connection holds a server.
	for r := 0; r < 4; r++ {
		var hold pgx.Tx
		if r%2 == 0 {
			if hold, err = holder.Begin(ctx); err != nil {
				fail("holder begin", err)
			}
			if _, err := hold.Exec(ctx, "select 1"); err != nil {
				fail("holder select", err)
			}
		}
		rotate(conn, fmt.Sprintf("auto%d", r), 1, pids)
		if hold != nil {
			if err := hold.Commit(ctx); err != nil {
				fail("holder commit", err)
			}
		}
	}

	// Inside a transaction: the evictions' DEALLOCATEs run in it, and it
	// must still commit with what it inserted.
	for r := 0; r < 2; r++ {
		var hold pgx.Tx
		if r == 0 {
			if hold, err = holder.Begin(ctx); err != nil {
				fail("holder begin", err)
			}
			if _, err := hold.Exec(ctx, "select 1"); err != nil {
				fail("holder select", err)
			}
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			fail("begin", err)
		}
		if _, err := tx.Exec(ctx, "insert into dd values ($1)", 100+r); err != nil {
			fail("insert", err)
		}
		rotate(tx, fmt.Sprintf("tx%d", r), 2, pids)
		if _, err := tx.Exec(ctx, "insert into dd values ($1)", 200+r); err != nil {
			fail("insert", err)
		}
		if err := tx.Commit(ctx); err != nil {
			fail("commit", err)
		}
		if hold != nil {
			if err := hold.Commit(ctx); err != nil {
				fail("holder commit", err)
			}
		}
	}

	// What the transactions inserted is there, seen from the other connection.
	rows, err := holder.Query(ctx, "select x from dd order by x")
	if err != nil {
		fail("select dd", err)
	}
	var xs []int32
	for rows.Next() {
		var x int32
		if err := rows.Scan(&x); err != nil {
			fail("scan dd", err)
		}
		xs = append(xs, x)
	}
	if rows.Err() != nil {
		fail("rows dd", rows.Err())
	}
	emit(map[string]interface{}{"committed": xs})

	// The statements the client still has are usable after all that.
	rotate(conn, "after", 1, pids)
	fmt.Printf("backends: %d\n", len(pids))
}

// pgx v4 sets search_path (conn.Exec without arguments: a simple Query)
// and then runs 24 rounds of statements that depend on it, each prepared
// once and cached by pgx (named protocol statements), while a second
// connection keeps one server of the pool busy every other round. Then it
// sets search_path again, this time in a transaction that commits, and
// once more in one that rolls back. Prints what the client saw as JSON
// lines, then `backends: <n>` (how many server backends it ran on), which
// the Rust test compares apart.
//
// Usage: pgx_search_path CONNSTRING
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

func rounds(label string, conn, holder *pgx.Conn, n int, pids map[int32]bool) {
	for i := 0; i < n; i++ {
		var hold pgx.Tx
		var err error
		if i%2 == 0 {
			if hold, err = holder.Begin(ctx); err != nil {
				fail("holder begin", err)
			}
			if _, err := hold.Exec(ctx, "select 1"); err != nil {
				fail("holder select", err)
			}
		}
		var path, setting string
		var count int64
		var pid int32
		if err := conn.QueryRow(ctx, "show search_path").Scan(&path); err != nil {
			fail(fmt.Sprintf("%s %d: show", label, i), err)
		}
		if err := conn.QueryRow(ctx, "select count(*) from only_here").Scan(&count); err != nil {
			fail(fmt.Sprintf("%s %d: count", label, i), err)
		}
		if err := conn.QueryRow(ctx, "select current_setting($1)", "search_path").Scan(&setting); err != nil {
			fail(fmt.Sprintf("%s %d: current_setting", label, i), err)
		}
		if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
			fail("pid", err)
		}
		pids[pid] = true
		if hold != nil {
			if err := hold.Commit(ctx); err != nil {
				fail("holder commit", err)
			}
		}
		emit(map[string]interface{}{"at": label, "round": i, "show": path, "only_here": count, "current_setting": setting})
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
	pids := map[int32]bool{}

	if _, err := conn.Exec(ctx, "SET search_path TO s2, public"); err != nil {
		fail("set", err)
	}
	rounds("set", conn, holder, 24, pids)

	tx, err := conn.Begin(ctx)
	if err != nil {
		fail("begin", err)
	}
	if _, err := tx.Exec(ctx, "SET search_path TO public, s2"); err != nil {
		fail("set in tx", err)
	}
	if err := tx.Commit(ctx); err != nil {
		fail("commit", err)
	}
	rounds("set in committed tx", conn, holder, 4, pids)

	tx, err = conn.Begin(ctx)
	if err != nil {
		fail("begin", err)
	}
	if _, err := tx.Exec(ctx, "SET search_path TO s2"); err != nil {
		fail("set in tx", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		fail("rollback", err)
	}
	rounds("set in rolled-back tx", conn, holder, 4, pids)
	fmt.Printf("backends: %d\n", len(pids))
}

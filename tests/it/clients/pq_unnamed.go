// lib/pq (database/sql) runs every query with arguments as an unnamed
// statement in two batches: Parse+Describe+Sync, then Bind+Execute+Sync.
// Through a transaction pool the second batch may land on another server
// connection, whose unnamed statement is someone else's (or none). This
// runs 24 rounds of such queries while a holder connection keeps one server
// busy every other round and a second lib/pq client runs its own unnamed
// statements in between (so the servers' unnamed statements keep changing).
// Prints what it read as JSON lines, then `backends: <n>` (how many server
// backends the first client ran on).
//
// Usage: pq_unnamed CONNSTRING
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"

	_ "github.com/lib/pq"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func open(dsn string) *sql.DB {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		fail("open", err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db
}

func main() {
	db, other, holder := open(os.Args[1]), open(os.Args[1]), open(os.Args[1])
	defer db.Close()
	defer other.Close()
	defer holder.Close()
	pids := map[int]bool{}
	for i := 0; i < 24; i++ {
		var hold *sql.Tx
		var err error
		if i%2 == 0 {
			if hold, err = holder.Begin(); err != nil {
				fail("holder begin", err)
			}
			if _, err = hold.Exec("select 1"); err != nil {
				fail("holder select", err)
			}
		}
		var sum, pid int
		var label string
		if err := db.QueryRow("select $1::int + $2::int, $3::text, pg_backend_pid()", i, 100, "mine").Scan(&sum, &label, &pid); err != nil {
			fail(fmt.Sprintf("round %d", i), err)
		}
		pids[pid] = true
		var theirs string
		if err := other.QueryRow("select 'theirs ' || $1::text", i).Scan(&theirs); err != nil {
			fail(fmt.Sprintf("other %d", i), err)
		}
		if hold != nil {
			if err := hold.Commit(); err != nil {
				fail("holder commit", err)
			}
		}
		b, _ := json.Marshal(map[string]interface{}{"round": i, "sum": sum, "label": label, "theirs": theirs})
		fmt.Println(string(b))
	}
	fmt.Printf("backends: %d\n", len(pids))
}

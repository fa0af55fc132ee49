// pgx v4 logs in (SCRAM-SHA-256: its own SCRAM client) and runs a
// statement it prepares and caches, with a bound parameter, and a SET/SHOW
// of a parameter of pgmlcat's. Prints what it saw, then `backends: <n>`.
//
// Usage: pgx_scram_login CONNSTRING
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v4"
)

func main() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer conn.Close(ctx)
	pids := map[int32]bool{}
	var user string
	var pid int32
	if err := conn.QueryRow(ctx, "select current_user::text, pg_backend_pid()").Scan(&user, &pid); err != nil {
		fmt.Fprintln(os.Stderr, "current_user:", err)
		os.Exit(1)
	}
	pids[pid] = true
	fmt.Println("user", user)
	for i := int32(0); i < 3; i++ {
		var n int32
		if err := conn.QueryRow(ctx, "select $1::int + 1, pg_backend_pid()", i).Scan(&n, &pid); err != nil {
			fmt.Fprintln(os.Stderr, "plus one:", err)
			os.Exit(1)
		}
		pids[pid] = true
		fmt.Println("plus one", n)
	}
	if _, err := conn.Exec(ctx, "set pgmlcat.max_lag_ms = 50"); err != nil {
		fmt.Fprintln(os.Stderr, "set:", err)
		os.Exit(1)
	}
	var shown string
	if err := conn.QueryRow(ctx, "show pgmlcat.max_lag_ms").Scan(&shown); err != nil {
		fmt.Fprintln(os.Stderr, "show:", err)
		os.Exit(1)
	}
	fmt.Println("max_lag_ms", shown)
	fmt.Println("backends:", len(pids))
}

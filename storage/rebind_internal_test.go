package storage

import (
	"context"
	"testing"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testdb"
)

// No domain query currently lists its placeholders out of order, so the
// reason rebind exists is pinned down here: SQLite numbers "$N" parameters
// by first appearance, which would swap these arguments.
func TestPlaceholdersOutOfOrder(t *testing.T) {
	t.Parallel()
	backend, dsn := testdb.Parse(t)
	ctx := context.Background()
	db, err := Open(ctx, backend, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	const q = `SELECT CAST($2 AS TEXT) || CAST($1 AS TEXT) || CAST($2 AS TEXT) || CAST($3 AS TEXT)`
	var got string
	if err := db.queryRow(ctx, q, "a", "b", "c").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "babc" {
		t.Errorf("on the DB: got %q, want %q", got, "babc")
	}
	err = db.Transact(ctx, func(tx *Tx) error {
		if _, err := tx.exec(ctx, `INSERT INTO storage_sequences (name, value) VALUES ($2, $1)`, 42, "test"); err != nil {
			return err
		}
		return tx.writeRow(ctx, q, "x", "y", "z").Scan(&got)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != "yxyz" {
		t.Errorf("in a transaction: got %q, want %q", got, "yxyz")
	}
	if v, err := db.CurrentSequence(ctx, "test"); err != nil || v != 42 {
		t.Errorf("out-of-order INSERT stored %d, %v; want 42", v, err)
	}
}

func TestRebind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		backend config.Backend
		in      string
		want    string
	}{
		{config.SQLite, `SELECT $2, $1, $10, $2`, `SELECT ?2, ?1, ?10, ?2`},
		{config.SQLite, `SELECT 1`, `SELECT 1`},
		{config.Postgres, `SELECT $2, $1`, `SELECT $2, $1`},
	}
	for _, tc := range tests {
		db := &DB{backend: tc.backend}
		// Twice: the second answer comes from the cache.
		for range 2 {
			if got := db.rebind(tc.in); got != tc.want {
				t.Errorf("%s: rebind(%q) = %q, want %q", tc.backend, tc.in, got, tc.want)
			}
		}
	}
}

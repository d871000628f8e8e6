// Package testdb gives each test its own database on the backend the test
// run selects: SQLite in a temporary directory by default, or PostgreSQL
// when VECHE_TEST_POSTGRES holds a DSN (each test gets a fresh schema that
// is dropped when it ends).
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/veche/veche/config"
)

// EnvPostgres names the variable that selects PostgreSQL for tests.
const EnvPostgres = "VECHE_TEST_POSTGRES"

// Backend reports which backend this test run uses.
func Backend() config.Backend {
	if os.Getenv(EnvPostgres) != "" {
		return config.Postgres
	}
	return config.SQLite
}

// URL returns a database.url for a new, empty database that lives as long
// as the test.
func URL(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvPostgres)
	if dsn == "" {
		return "sqlite://" + filepath.Join(t.TempDir(), "veche.db")
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "veche_test_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(context.Background(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testdb: creating schema: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testdb: %s is not a URL: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Parse returns the backend and driver DSN of URL(t), as storage.Open
// takes them.
func Parse(t testing.TB) (config.Backend, string) {
	t.Helper()
	backend, dsn, err := config.Database{URL: URL(t)}.Parse("")
	if err != nil {
		t.Fatal(err)
	}
	return backend, dsn
}

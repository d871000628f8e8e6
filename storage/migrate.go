package storage

import (
	"bufio"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/veche/veche/config"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string // already filtered for the dialect
}

// loadMigrations reads migrations/NNNN_name.sql in order. A line ending in
// "-- only: sqlite" or "-- only: postgres" is kept for that dialect only.
func loadMigrations(backend config.Backend) ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("storage: migration file %q is not NNNN_name.sql", e.Name())
		}
		raw, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: filterDialect(string(raw), backend)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	// Numbers must be unique; gaps are allowed, so that work developed in
	// parallel can reserve numbers ahead.
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("storage: two migrations are numbered %d", ms[i].version)
		}
	}
	return ms, nil
}

func filterDialect(src string, backend config.Backend) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(src))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "-- only: "); i >= 0 {
			if strings.TrimSpace(line[i+len("-- only: "):]) != string(backend) {
				continue
			}
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// migrate applies every migration not yet recorded in storage_migrations,
// each in its own transaction, logging progress as it goes.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations(db.backend)
	if err != nil {
		return err
	}
	// lock serializes servers starting against one PostgreSQL database at
	// once, for the whole of each transaction.
	lock := func(tx *Tx) error {
		if db.backend != config.Postgres {
			return nil
		}
		_, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(7366756)`)
		return err
	}
	err = db.Transact(ctx, func(tx *Tx) error {
		if err := lock(tx); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `CREATE TABLE IF NOT EXISTS storage_migrations (
			version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: creating migrations table: %w", err)
	}
	for _, m := range ms {
		err := db.Transact(ctx, func(tx *Tx) error {
			if err := lock(tx); err != nil {
				return err
			}
			var n int
			if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM storage_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			start := time.Now()
			db.log.WithField("version", m.version).WithField("name", m.name).Info("Applying database migration")
			if _, err := tx.tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("storage: migration %d (%s): %w", m.version, m.name, err)
			}
			_, err := tx.exec(ctx, `INSERT INTO storage_migrations (version, name, applied_ts) VALUES ($1, $2, $3)`,
				m.version, m.name, time.Now().UnixMilli())
			db.log.WithField("version", m.version).WithField("duration", time.Since(start)).Info("Database migration applied")
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

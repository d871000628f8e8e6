// Package storage is Veche's only SQL speaker. It opens SQLite (the embedded
// default) or PostgreSQL, runs the numbered migrations, and exposes one file
// of typed methods per domain. SQL is written once with $N placeholders;
// lines that only one dialect understands are marked in the migrations.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/mattn/go-sqlite3"    // registers the "sqlite3" driver
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/config"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrConflict is returned when a unique row already exists.
var ErrConflict = errors.New("storage: already exists")

// slowTransaction is when Transact warns about a transaction's duration.
const slowTransaction = 500 * time.Millisecond

// DB is an open database. With SQLite, all writes go through one connection
// (SQLite allows one writer; queueing in Go beats spinning on SQLITE_BUSY)
// while reads use a separate pool that WAL lets run alongside the writer.
// With PostgreSQL both are the same pool.
type DB struct {
	ops
	backend config.Backend
	writer  *sql.DB
	reader  *sql.DB
	log     logrus.FieldLogger

	rebindCache sync.Map // query → SQLite form
	stmts       sync.Map // stmtKey → *sql.Stmt
}

// Options tune Open.
type Options struct {
	MaxOpenConns int
	Log          logrus.FieldLogger
}

// Open connects to the database named by the backend and DSN (see
// config.Database.Parse) and brings its schema up to date.
func Open(ctx context.Context, backend config.Backend, dsn string, opts Options) (*DB, error) {
	if opts.Log == nil {
		l := logrus.New()
		l.SetOutput(nopWriter{})
		opts.Log = l
	}
	if opts.MaxOpenConns < 1 {
		opts.MaxOpenConns = 10
	}
	db := &DB{backend: backend, log: opts.Log}
	db.ops = ops{q: db, backend: backend}
	switch backend {
	case config.SQLite:
		// _txlock=immediate takes the write lock at BEGIN so that a
		// transaction never fails half-way on lock upgrade.
		common := "_busy_timeout=10000&_foreign_keys=on&_journal_mode=WAL&_synchronous=NORMAL"
		w, err := sql.Open("sqlite3", "file:"+dsn+"?"+common+"&_txlock=immediate")
		if err != nil {
			return nil, err
		}
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxLifetime(0)
		r, err := sql.Open("sqlite3", "file:"+dsn+"?"+common+"&_query_only=true")
		if err != nil {
			w.Close()
			return nil, err
		}
		r.SetMaxOpenConns(max(opts.MaxOpenConns, 2))
		r.SetMaxIdleConns(max(opts.MaxOpenConns, 2))
		db.writer, db.reader = w, r
	case config.Postgres:
		p, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		p.SetMaxOpenConns(opts.MaxOpenConns)
		p.SetMaxIdleConns(opts.MaxOpenConns)
		p.SetConnMaxIdleTime(5 * time.Minute)
		db.writer, db.reader = p, p
	default:
		return nil, fmt.Errorf("storage: unknown backend %q", backend)
	}
	if err := db.writer.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: connecting to %s: %w", backend, err)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Backend tells which database this is.
func (db *DB) Backend() config.Backend { return db.backend }

// Close closes every connection.
func (db *DB) Close() error {
	db.stmts.Range(func(_, s any) bool {
		s.(*sql.Stmt).Close()
		return true
	})
	err := db.writer.Close()
	if db.reader != db.writer {
		err = errors.Join(err, db.reader.Close())
	}
	return err
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.reader.PingContext(ctx) }

// Pools returns the connection pools by name, for metrics.
func (db *DB) Pools() map[string]*sql.DB {
	if db.reader == db.writer {
		return map[string]*sql.DB{"main": db.writer}
	}
	return map[string]*sql.DB{"writer": db.writer, "reader": db.reader}
}

var placeholder = regexp.MustCompile(`\$(\d+)`)

// rebind turns $N placeholders into SQLite's ?N. SQLite reads "$1" as a
// named parameter numbered by first appearance, which would bind the wrong
// argument when placeholders are not in order; ?N is explicit.
func (db *DB) rebind(q string) string {
	if db.backend != config.SQLite {
		return q
	}
	if v, ok := db.rebindCache.Load(q); ok {
		return v.(string)
	}
	r := placeholder.ReplaceAllString(q, "?$1")
	db.rebindCache.Store(q, r)
	return r
}

// querier is what domain methods run statements on: the database (reads on
// the reader pool, writes on the writer) or one transaction.
type querier interface {
	exec(ctx context.Context, q string, args ...any) (sql.Result, error)
	query(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	queryRow(ctx context.Context, q string, args ...any) *sql.Row
	// writeRow runs a writing statement that returns a row (RETURNING).
	writeRow(ctx context.Context, q string, args ...any) *sql.Row
}

// driverCtx is the context handed to the driver. For SQLite it drops
// cancellation: mattn/go-sqlite3 starts a goroutine per statement (or an
// AfterFunc per query) to watch a cancellable context, which cost more than
// the statements themselves, and every statement here is short. Deadlines
// still bound whole requests and transactions in the callers.
func (db *DB) driverCtx(ctx context.Context) context.Context {
	if db.backend == config.SQLite {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// stmt returns a prepared statement for q on pool, preparing it once. The
// queries are constants, so the cache is bounded; database/sql re-prepares
// per connection as needed. Preparing was the largest single cost of a
// query on SQLite before this cache.
func (db *DB) stmt(ctx context.Context, pool *sql.DB, q string) (*sql.Stmt, error) {
	k := stmtKey{pool, q}
	if s, ok := db.stmts.Load(k); ok {
		return s.(*sql.Stmt), nil
	}
	s, err := pool.PrepareContext(ctx, db.rebind(q))
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.stmts.LoadOrStore(k, s); loaded {
		s.Close()
		return prev.(*sql.Stmt), nil
	}
	return s, nil
}

type stmtKey struct {
	pool *sql.DB
	q    string
}

func (db *DB) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx = db.driverCtx(ctx)
	s, err := db.stmt(ctx, db.writer, q)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}
func (db *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = db.driverCtx(ctx)
	s, err := db.stmt(ctx, db.reader, q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}
func (db *DB) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return db.rowOn(ctx, db.reader, q, args)
}
func (db *DB) writeRow(ctx context.Context, q string, args ...any) *sql.Row {
	return db.rowOn(ctx, db.writer, q, args)
}
func (db *DB) rowOn(ctx context.Context, pool *sql.DB, q string, args []any) *sql.Row {
	ctx = db.driverCtx(ctx)
	s, err := db.stmt(ctx, pool, q)
	if err != nil {
		// *sql.Row cannot be built with an error; the unprepared query
		// reports the same failure through it.
		return pool.QueryRowContext(ctx, db.rebind(q), args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// ops carries the domain methods (one file per domain); both DB and Tx
// embed it, so every method works alone or inside a transaction.
type ops struct {
	q       querier
	backend config.Backend
}

// forUpdate is the row-locking suffix for a SELECT inside a transaction:
// PostgreSQL needs it; SQLite has one writer and no such clause.
func (o ops) forUpdate() string {
	if o.backend == config.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// Tx is one database transaction. Domain methods are available on it as on
// DB, so that several of them can commit atomically.
type Tx struct {
	ops
	db *DB
	tx *sql.Tx
	// unprepared are queries that ran without a cached statement.
	unprepared []string
	// bound are this transaction's statements by query: big transactions
	// (a join's thousands of state events) run the same few queries
	// thousands of times.
	bound map[string]*sql.Stmt
}

// txStmt binds the cached writer statement for q to the transaction. On a
// cache miss it returns nil: preparing on the pool would need a second
// writer connection, which SQLite's single writer does not have while the
// transaction holds it. The query then runs unprepared and is prepared for
// next time once the transaction ends.
func (t *Tx) txStmt(ctx context.Context, q string) *sql.Stmt {
	if s := t.bound[q]; s != nil {
		return s
	}
	var bound *sql.Stmt
	if s, ok := t.db.stmts.Load(stmtKey{t.db.writer, q}); ok {
		bound = t.tx.StmtContext(ctx, s.(*sql.Stmt))
	} else {
		// Prepared on the transaction's own connection, for as long as it
		// lasts; cached on the pool once it ends.
		t.unprepared = append(t.unprepared, q)
		var err error
		if bound, err = t.tx.PrepareContext(ctx, t.db.rebind(q)); err != nil {
			return nil
		}
	}
	if t.bound == nil {
		t.bound = map[string]*sql.Stmt{}
	}
	t.bound[q] = bound
	return bound
}

func (t *Tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx = t.db.driverCtx(ctx)
	if s := t.txStmt(ctx, q); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, t.db.rebind(q), args...)
}
func (t *Tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = t.db.driverCtx(ctx)
	if s := t.txStmt(ctx, q); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, t.db.rebind(q), args...)
}
func (t *Tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	ctx = t.db.driverCtx(ctx)
	if s := t.txStmt(ctx, q); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, t.db.rebind(q), args...)
}
func (t *Tx) writeRow(ctx context.Context, q string, args ...any) *sql.Row {
	return t.queryRow(ctx, q, args...)
}

// Transact runs fn in a transaction on the writer, committing if fn returns
// nil and rolling back otherwise.
func (db *DB) Transact(ctx context.Context, fn func(tx *Tx) error) (err error) {
	start := time.Now()
	var tx *Tx
	sqlTx, err := db.writer.BeginTx(db.driverCtx(ctx), nil)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = sqlTx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = sqlTx.Rollback()
		} else if err = sqlTx.Commit(); err != nil {
			err = fmt.Errorf("storage: commit: %w", err)
		}
		if d := time.Since(start); d > slowTransaction {
			db.log.WithField("duration", d).Warn("Slow database transaction")
		}
		for _, q := range tx.unprepared {
			_, _ = db.stmt(ctx, db.writer, q) // a failure only costs the cache
		}
	}()
	tx = &Tx{db: db, tx: sqlTx}
	tx.ops = ops{q: tx, backend: db.backend}
	return fn(tx)
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

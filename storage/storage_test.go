package storage_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/veche/veche/internal/testdb"
	"github.com/veche/veche/storage"
)

// open gives the test a migrated database on the selected backend.
func open(t testing.TB) *storage.DB {
	t.Helper()
	backend, dsn := testdb.Parse(t)
	db, err := storage.Open(context.Background(), backend, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// createUser adds a plain account that the test needs to exist, e.g. as
// the target of foreign keys.
func createUser(t testing.TB, db *storage.DB, localpart string) {
	t.Helper()
	if err := db.CreateUser(t.Context(), storage.User{Localpart: localpart, CreatedTS: 1}); err != nil {
		t.Fatalf("creating %s: %v", localpart, err)
	}
}

func TestOpenTwiceKeepsMigrations(t *testing.T) {
	t.Parallel()
	backend, dsn := testdb.Parse(t)
	ctx := context.Background()
	db, err := storage.Open(ctx, backend, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(ctx, storage.User{Localpart: "alice", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = storage.Open(ctx, backend, dsn, storage.Options{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer db.Close()
	if _, err := db.User(ctx, "alice"); err != nil {
		t.Fatalf("user lost across reopen: %v", err)
	}
	// Re-running the seed rows of migration 1 would reset the counters.
	if v, err := db.NextSequence(ctx, "guest"); err != nil || v != 1 {
		t.Fatalf("NextSequence after reopen = %d, %v; want 1", v, err)
	}
}

func TestBackendAndPing(t *testing.T) {
	t.Parallel()
	db := open(t)
	if db.Backend() != testdb.Backend() {
		t.Errorf("Backend() = %q, want %q", db.Backend(), testdb.Backend())
	}
	if err := db.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if len(db.Pools()) == 0 {
		t.Error("Pools() is empty")
	}
}

func TestNextSequence(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	for want := int64(1); want <= 3; want++ {
		got, err := db.NextSequence(ctx, "guest")
		if err != nil || got != want {
			t.Fatalf("NextSequence(guest) = %d, %v; want %d", got, err, want)
		}
	}
	if cur, err := db.CurrentSequence(ctx, "guest"); err != nil || cur != 3 {
		t.Errorf("CurrentSequence(guest) = %d, %v; want 3", cur, err)
	}
	if _, err := db.NextSequence(ctx, "no-such-sequence"); err == nil {
		t.Error("NextSequence of an unknown sequence succeeded")
	}
}

func TestNextSequenceConcurrent(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	const n = 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []int64
		errs []error
	)
	for range n {
		wg.Go(func() {
			var v int64
			err := db.Transact(ctx, func(tx *storage.Tx) error {
				var err error
				v, err = tx.NextSequence(ctx, "guest")
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			got = append(got, v)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d transactions failed, first: %v", len(errs), n, errs[0])
	}
	slices.Sort(got)
	for i, v := range got {
		if v != int64(i+1) {
			t.Fatalf("values are not 1..%d without gaps or repeats: %v", n, got)
		}
	}
	if cur, err := db.CurrentSequence(ctx, "guest"); err != nil || cur != n {
		t.Errorf("CurrentSequence = %d, %v; want %d", cur, err, n)
	}
}

func TestTransactCommits(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	err := db.Transact(ctx, func(tx *storage.Tx) error {
		if err := tx.CreateUser(ctx, storage.User{Localpart: "alice", CreatedTS: 1}); err != nil {
			return err
		}
		// A transaction reads its own uncommitted writes.
		if ok, err := tx.UserExists(ctx, "alice"); err != nil || !ok {
			t.Errorf("inside the transaction UserExists = %v, %v", ok, err)
		}
		_, err := tx.NextSequence(ctx, "guest")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := db.UserExists(ctx, "alice"); err != nil || !ok {
		t.Errorf("after commit UserExists = %v, %v", ok, err)
	}
	if cur, _ := db.CurrentSequence(ctx, "guest"); cur != 1 {
		t.Errorf("sequence after commit = %d, want 1", cur)
	}
}

// assertNothingWritten checks that a rolled-back transaction that created
// alice and advanced the stream left no trace, and that the database still
// takes writes (a leaked SQLite writer connection would block forever).
func assertNothingWritten(t *testing.T, db *storage.DB) {
	t.Helper()
	ctx := t.Context()
	if _, err := db.User(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("User after rollback: err = %v, want ErrNotFound", err)
	}
	if cur, err := db.CurrentSequence(ctx, "guest"); err != nil || cur != 0 {
		t.Errorf("sequence after rollback = %d, %v; want 0", cur, err)
	}
	if err := db.CreateUser(ctx, storage.User{Localpart: "alice", CreatedTS: 2}); err != nil {
		t.Errorf("writing after rollback: %v", err)
	}
}

func TestTransactRollsBackOnError(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	boom := errors.New("boom")
	err := db.Transact(ctx, func(tx *storage.Tx) error {
		if err := tx.CreateUser(ctx, storage.User{Localpart: "alice", CreatedTS: 1}); err != nil {
			return err
		}
		if _, err := tx.NextSequence(ctx, "guest"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Transact returned %v, want fn's error", err)
	}
	assertNothingWritten(t, db)
}

func TestTransactRollsBackOnPanic(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	type sentinel struct{}
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		_ = db.Transact(ctx, func(tx *storage.Tx) error {
			if err := tx.CreateUser(ctx, storage.User{Localpart: "alice", CreatedTS: 1}); err != nil {
				return err
			}
			if _, err := tx.NextSequence(ctx, "guest"); err != nil {
				return err
			}
			panic(sentinel{})
		})
	}()
	if _, ok := recovered.(sentinel); !ok {
		t.Fatalf("recovered %v, want the original panic value", recovered)
	}
	assertNothingWritten(t, db)
}

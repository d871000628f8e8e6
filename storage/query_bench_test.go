package storage_test

import "testing"

func BenchmarkUserLookup(b *testing.B) {
	db := open(b)
	ctx := b.Context()
	createUser(b, db, "alice")
	b.ResetTimer()
	for b.Loop() {
		if _, err := db.User(ctx, "alice"); err != nil {
			b.Fatal(err)
		}
	}
}

package storage_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/veche/veche/storage"
)

func TestProfileFields(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")

	got, err := db.ProfileFields(ctx, "alice")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ProfileFields of an empty profile = %v, %v; want an empty map", got, err)
	}
	set := func(lp, field, value string) {
		t.Helper()
		if err := db.SetProfileField(ctx, lp, field, json.RawMessage(value)); err != nil {
			t.Fatal(err)
		}
	}
	set("alice", "displayname", `"Alice"`)
	set("alice", "avatar_url", `"mxc://example.org/a"`)
	set("alice", "m.tz", `"Europe/Berlin"`)
	set("alice", "displayname", `"Alice A."`) // overwrites
	set("bob", "displayname", `"Bob"`)
	if err := db.SetProfileField(ctx, "nobody", "displayname", json.RawMessage(`"x"`)); err == nil {
		t.Error("SetProfileField for an unknown user succeeded despite the foreign key")
	}

	want := map[string]string{"displayname": `"Alice A."`, "avatar_url": `"mxc://example.org/a"`, "m.tz": `"Europe/Berlin"`}
	check := func(lp string, want map[string]string) {
		t.Helper()
		got, err := db.ProfileFields(ctx, lp)
		if err != nil {
			t.Fatal(err)
		}
		gotStr := map[string]string{}
		for k, v := range got {
			gotStr[k] = string(v)
		}
		if !maps.Equal(gotStr, want) {
			t.Errorf("ProfileFields(%s) = %v, want %v", lp, gotStr, want)
		}
	}
	check("alice", want)

	if err := db.DeleteProfileField(ctx, "alice", "m.tz"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteProfileField(ctx, "alice", "m.tz"); err != nil {
		t.Errorf("deleting a missing field: %v", err)
	}
	delete(want, "m.tz")
	check("alice", want)

	if err := db.DeleteProfile(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	check("alice", map[string]string{})
	check("bob", map[string]string{"displayname": `"Bob"`})
}

func TestAccountData(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")

	var lastPos int64
	put := func(lp, room, typ, content string) int64 {
		t.Helper()
		lastPos++
		if err := db.PutAccountData(ctx, lp, room, typ, json.RawMessage(content), lastPos); err != nil {
			t.Fatal(err)
		}
		return lastPos
	}
	p1 := put("alice", "", "m.push_rules", `{"a":1}`)
	p2 := put("alice", "!room:example.org", "m.tag", `{"tags":{}}`)
	pb := put("bob", "", "m.push_rules", `{"b":1}`)
	p3 := put("alice", "", "m.direct", `{}`)
	if !(p1 < p2 && p2 < pb && pb < p3) {
		t.Fatalf("positions do not increase: %d %d %d %d", p1, p2, pb, p3)
	}

	if c, err := db.AccountDataEntry(ctx, "alice", "!room:example.org", "m.tag"); err != nil || string(c) != `{"tags":{}}` {
		t.Errorf("AccountDataEntry = %s, %v", c, err)
	}
	for _, tc := range []struct{ lp, room, typ string }{
		{"alice", "", "m.tag"},                   // type only exists per room
		{"alice", "!other:example.org", "m.tag"}, // another room
		{"bob", "", "m.direct"},                  // another user
	} {
		if _, err := db.AccountDataEntry(ctx, tc.lp, tc.room, tc.typ); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("AccountDataEntry(%q, %q, %q): err = %v, want ErrNotFound", tc.lp, tc.room, tc.typ, err)
		}
	}

	types := func(ds []storage.AccountData) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.Type)
		}
		return out
	}
	// since is exclusive and upTo inclusive, so that a client at since
	// gets each change exactly once.
	ranges := []struct {
		name        string
		since, upTo int64
		want        []string
	}{
		{"everything", 0, p3, []string{"m.push_rules", "m.tag", "m.direct"}},
		{"since is exclusive", p1, p3, []string{"m.tag", "m.direct"}},
		{"upTo is inclusive", 0, p2, []string{"m.push_rules", "m.tag"}},
		{"single position", p1, p2, []string{"m.tag"}},
		{"empty window", p2, p2, nil},
		{"other users' positions skipped", p2, pb, nil},
		{"beyond the end", p3, p3 + 100, nil},
	}
	for _, tc := range ranges {
		got, err := db.AccountDataSince(ctx, "alice", tc.since, tc.upTo)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(types(got), tc.want) {
			t.Errorf("%s: AccountDataSince(%d, %d) = %v, want %v", tc.name, tc.since, tc.upTo, types(got), tc.want)
		}
	}

	all, _ := db.AccountDataSince(ctx, "alice", 0, p3)
	if d := all[1]; d.RoomID != "!room:example.org" || d.StreamPos != p2 || string(d.Content) != `{"tags":{}}` {
		t.Errorf("entry = %+v", d)
	}

	// Replacing an entry moves it to a new position with the new content.
	p4 := put("alice", "", "m.push_rules", `{"a":2}`)
	if p4 <= p3 {
		t.Fatalf("replacement position %d not after %d", p4, p3)
	}
	got, _ := db.AccountDataSince(ctx, "alice", 0, p4)
	if want := []string{"m.tag", "m.direct", "m.push_rules"}; !slices.Equal(types(got), want) {
		t.Fatalf("after replacement: %v, want %v", types(got), want)
	}
	if last := got[2]; last.StreamPos != p4 || string(last.Content) != `{"a":2}` {
		t.Errorf("replaced entry = %+v", last)
	}
	if got, _ := db.AccountDataSince(ctx, "alice", 0, p1); len(got) != 0 {
		t.Errorf("replaced entry still visible at its old position: %+v", got)
	}
	if c, _ := db.AccountDataEntry(ctx, "alice", "", "m.push_rules"); string(c) != `{"a":2}` {
		t.Errorf("AccountDataEntry after replacement = %s", c)
	}
	if c, _ := db.AccountDataEntry(ctx, "bob", "", "m.push_rules"); string(c) != `{"b":1}` {
		t.Errorf("bob's entry changed: %s", c)
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")
	steps := []struct {
		user   string
		filter string
		want   int64
	}{
		{"alice", `{"room":{"timeline":{"limit":10}}}`, 0},
		{"alice", `{"room":{"timeline":{"limit":20}}}`, 1},
		{"alice", `{"room":{"timeline":{"limit":10}}}`, 0}, // identical: same ID
		{"bob", `{"room":{"timeline":{"limit":20}}}`, 0},   // own counter
		{"alice", `{}`, 2},
		{"bob", `{"room":{"timeline":{"limit":20}}}`, 0},
		{"bob", `{}`, 1},
	}
	for i, s := range steps {
		id, err := db.PutFilter(ctx, s.user, []byte(s.filter))
		if err != nil || id != s.want {
			t.Errorf("step %d: PutFilter(%s, %s) = %d, %v; want %d", i, s.user, s.filter, id, err, s.want)
		}
	}
	if f, err := db.Filter(ctx, "alice", 1); err != nil || string(f) != `{"room":{"timeline":{"limit":20}}}` {
		t.Errorf("Filter(alice, 1) = %s, %v", f, err)
	}
	for _, tc := range []struct {
		user string
		id   int64
	}{{"alice", 3}, {"bob", 2}, {"nobody", 0}, {"alice", -1}} {
		if _, err := db.Filter(ctx, tc.user, tc.id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Filter(%s, %d): err = %v, want ErrNotFound", tc.user, tc.id, err)
		}
	}
	if _, err := db.PutFilter(ctx, "nobody", []byte(`{}`)); err == nil {
		t.Error("PutFilter for an unknown user succeeded despite the foreign key")
	}
}

func TestPutFilterConcurrent(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	const n = 16
	ids := make([]int64, n)
	errs := make([]error, n)
	same := make([]int64, n)
	sameErrs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = db.PutFilter(ctx, "alice", fmt.Appendf(nil, `{"n":%d}`, i))
		})
		// Everyone storing the same filter at once must agree on its ID.
		wg.Go(func() {
			same[i], sameErrs[i] = db.PutFilter(ctx, "alice", []byte(`{"same":true}`))
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || sameErrs[i] != nil {
			t.Fatalf("PutFilter failed: %v / %v", errs[i], sameErrs[i])
		}
	}
	all := append(slices.Clone(ids), same[0])
	slices.Sort(all)
	for i, id := range all {
		if id != int64(i) {
			t.Fatalf("IDs are not 0..%d: %v", n, all)
		}
	}
	for i, id := range same {
		if id != same[0] {
			t.Fatalf("identical filter got IDs %d and %d", same[0], same[i])
		}
	}
	for i, id := range ids {
		f, err := db.Filter(ctx, "alice", id)
		if err != nil || string(f) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Errorf("Filter(%d) = %s, %v", id, f, err)
		}
	}
}

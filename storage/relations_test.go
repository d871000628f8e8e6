package storage_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

// relRoom holds events inserted straight into rooms_events: each gets the
// next depth and stream position unless an option says otherwise.
type relRoom struct {
	t     *testing.T
	db    *storage.DB
	nid   int64
	depth int64
	pos   *int64 // shared by the rooms of one test: stream positions are global
}

func newRelRoom(t *testing.T, db *storage.DB, roomID string, pos *int64) *relRoom {
	t.Helper()
	nid, err := db.CreateRoom(t.Context(), roomID, "12", 1)
	if err != nil {
		t.Fatal(err)
	}
	return &relRoom{t: t, db: db, nid: nid, pos: pos}
}

type relOpt func(*storage.EventRow)

func withRel(relType, parent string) relOpt {
	return func(r *storage.EventRow) { r.RelType, r.RelatesTo = relType, parent }
}
func withSender(sender string) relOpt { return func(r *storage.EventRow) { r.Sender = sender } }
func withType(typ string) relOpt      { return func(r *storage.EventRow) { r.Type = typ } }
func withTS(ts int64) relOpt          { return func(r *storage.EventRow) { r.OriginServerTS = ts } }
func withContent(js string) relOpt {
	return func(r *storage.EventRow) { r.JSON = []byte(`{"content":` + js + `}`) }
}
func withSnapshots(b, a int64) relOpt {
	return func(r *storage.EventRow) { r.StateBeforeNID, r.StateAfterNID = b, a }
}
func withStateKey(k string) relOpt { return func(r *storage.EventRow) { r.StateKey = &k } }
func withRejected() relOpt {
	return func(r *storage.EventRow) { r.StreamPos, r.Status = 0, storage.EventRejected }
}
func withNewContent(body string) relOpt {
	return withContent(`{"m.new_content":{"body":"` + body + `"}}`)
}

func (rr *relRoom) add(eventID string, opts ...relOpt) storage.EventRow {
	rr.t.Helper()
	rr.depth++
	*rr.pos++
	row := storage.EventRow{
		RoomNID: rr.nid, EventID: eventID, Type: "m.room.message", Sender: "@alice:x", Depth: rr.depth,
		OriginServerTS: 1000 + *rr.pos, StreamPos: *rr.pos, StateBeforeNID: 1, StateAfterNID: 1, JSON: []byte(`{"content":{}}`),
	}
	for _, o := range opts {
		o(&row)
	}
	if _, err := rr.db.InsertEvent(rr.t.Context(), &row); err != nil {
		rr.t.Fatalf("inserting %s: %v", eventID, err)
	}
	return row
}

func (rr *relRoom) redact(eventID string) {
	rr.t.Helper()
	if err := rr.db.SetRedactedBy(rr.t.Context(), eventID, "$redaction"); err != nil {
		rr.t.Fatal(err)
	}
}

func relEventIDs(rows []storage.EventRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.EventID
	}
	return out
}

var (
	relEnd   = storage.TopoPoint{Depth: 1 << 62, Stream: 1 << 62}
	relStart = storage.TopoPoint{}
)

func TestRelations(t *testing.T) {
	t.Parallel()
	db := open(t)
	var pos int64
	room := newRelRoom(t, db, "!r:x", &pos)
	other := newRelRoom(t, db, "!o:x", &pos)
	room.add("$parent")
	room.add("$r1", withType("m.reaction"), withRel("m.annotation", "$parent"))
	room.add("$reply", withRel("m.thread", "$parent"))
	room.add("$r2", withType("m.reaction"), withRel("m.annotation", "$parent"))
	room.add("$edit", withRel("m.replace", "$reply"))
	room.add("$deep3", withType("m.reaction"), withRel("m.annotation", "$edit"))
	room.add("$deep4", withType("m.reaction"), withRel("m.annotation", "$deep3"))
	room.add("$redacted", withType("m.reaction"), withRel("m.annotation", "$parent"))
	room.redact("$redacted")
	room.add("$rejected", withType("m.reaction"), withRel("m.annotation", "$parent"), withRejected())
	other.add("$elsewhere", withType("m.reaction"), withRel("m.annotation", "$parent"))
	r3 := room.add("$r3", withType("m.reaction"), withRel("m.annotation", "$parent"))

	for _, tc := range []struct {
		name string
		q    storage.RelationsQuery
		want []string // backwards from the end
	}{
		{"direct", storage.RelationsQuery{Depth: 1}, []string{"$r3", "$r2", "$reply", "$r1"}},
		{"by rel_type", storage.RelationsQuery{Depth: 1, RelType: "m.annotation"}, []string{"$r3", "$r2", "$r1"}},
		{"by event type", storage.RelationsQuery{Depth: 1, RelType: "m.thread", EventType: "m.reaction"}, nil},
		{"three levels", storage.RelationsQuery{Depth: 3}, []string{"$r3", "$deep3", "$edit", "$r2", "$reply", "$r1"}},
		{"filter at every level", storage.RelationsQuery{Depth: 3, RelType: "m.annotation"}, []string{"$r3", "$r2", "$r1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.RoomNID, tc.q.ParentID = room.nid, "$parent"
			rows, err := db.Relations(t.Context(), tc.q, relEnd, true, 50)
			if err != nil {
				t.Fatal(err)
			}
			if got := relEventIDs(rows); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}

	q := storage.RelationsQuery{RoomNID: room.nid, ParentID: "$parent", Depth: 1}
	// Backwards pages are the events before a point, forwards the events
	// at or after it.
	at3 := storage.TopoPoint{Depth: r3.Depth, Stream: r3.StreamPos}
	rows, err := db.Relations(t.Context(), q, at3, true, 2)
	if err != nil || !slices.Equal(relEventIDs(rows), []string{"$r2", "$reply"}) {
		t.Fatalf("backwards from $r3 = %v, %v", relEventIDs(rows), err)
	}
	rows, err = db.Relations(t.Context(), q, at3, false, 5)
	if err != nil || !slices.Equal(relEventIDs(rows), []string{"$r3"}) {
		t.Fatalf("forwards from $r3 = %v, %v", relEventIDs(rows), err)
	}
	rows, err = db.Relations(t.Context(), q, relStart, false, 2)
	if err != nil || !slices.Equal(relEventIDs(rows), []string{"$r1", "$reply"}) {
		t.Fatalf("forwards from the start = %v, %v", relEventIDs(rows), err)
	}
	// The other room's child is no child of this room's event.
	q.RoomNID = other.nid
	if rows, err := db.Relations(t.Context(), q, relEnd, true, 5); err != nil || len(rows) != 0 {
		t.Fatalf("other room = %v, %v", relEventIDs(rows), err)
	}
}

func TestThreadRoots(t *testing.T) {
	t.Parallel()
	db := open(t)
	var pos int64
	room := newRelRoom(t, db, "!r:x", &pos)
	room.add("$A", withSender("@alice:x"))
	room.add("$B", withSender("@bob:x"))
	room.add("$C", withSender("@bob:x"))
	room.add("$a1", withSender("@bob:x"), withRel("m.thread", "$A"))
	room.add("$b1", withSender("@alice:x"), withRel("m.thread", "$B"))
	room.add("$c1", withSender("@bob:x"), withRel("m.thread", "$C"))
	room.add("$a2", withSender("@bob:x"), withRel("m.thread", "$A"))
	// A redacted reply is no activity.
	room.add("$c2", withSender("@carol:x"), withRel("m.thread", "$C"))
	room.redact("$c2")
	room.add("$not-a-thread", withRel("m.reference", "$B"))

	list := func(before storage.TopoPoint, participant string, limit int) []string {
		t.Helper()
		roots, err := db.ThreadRoots(t.Context(), room.nid, before, participant, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range roots {
			out = append(out, r.RootID)
		}
		return out
	}
	for _, tc := range []struct {
		participant string
		want        []string
	}{
		{"", []string{"$A", "$C", "$B"}},
		{"@alice:x", []string{"$A", "$B"}},
		{"@bob:x", []string{"$A", "$C", "$B"}},
		{"@carol:x", nil},
	} {
		if got := list(relEnd, tc.participant, 10); !slices.Equal(got, tc.want) {
			t.Errorf("participant %q: %v, want %v", tc.participant, got, tc.want)
		}
	}
	// Paging by the latest event's point.
	var got []string
	cursor := relEnd
	for {
		roots, err := db.ThreadRoots(t.Context(), room.nid, cursor, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(roots) == 0 {
			break
		}
		got = append(got, roots[0].RootID)
		cursor = roots[0].Latest
	}
	if !slices.Equal(got, []string{"$A", "$C", "$B"}) {
		t.Fatalf("paged = %v", got)
	}
}

func TestEventsByTimestamp(t *testing.T) {
	t.Parallel()
	db := open(t)
	var pos int64
	room := newRelRoom(t, db, "!r:x", &pos)
	room.add("$t10", withTS(10))
	room.add("$t20a", withTS(20))
	room.add("$t20b", withTS(20))
	room.add("$gone", withTS(25), withRejected())
	room.add("$t30", withTS(30))
	for _, tc := range []struct {
		from    storage.TimePoint
		forward bool
		want    []string
	}{
		{storage.TimePoint{TS: 15}, true, []string{"$t20a", "$t20b", "$t30"}},
		{storage.TimePoint{TS: 20}, true, []string{"$t20a", "$t20b", "$t30"}},
		{storage.TimePoint{TS: 25, Stream: 1 << 62}, false, []string{"$t20b", "$t20a", "$t10"}},
		{storage.TimePoint{TS: 31}, true, nil},
		{storage.TimePoint{TS: 9, Stream: 1 << 62}, false, nil},
	} {
		rows, err := db.EventsByTimestamp(t.Context(), room.nid, tc.from, tc.forward, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := relEventIDs(rows); !slices.Equal(got, tc.want) {
			t.Errorf("from %+v forward=%v: %v, want %v", tc.from, tc.forward, got, tc.want)
		}
	}
}

func TestThreadsAndReferences(t *testing.T) {
	t.Parallel()
	db := open(t)
	var pos int64
	room := newRelRoom(t, db, "!r:x", &pos)
	room.add("$root")
	room.add("$other-root")
	// Two snapshot groups of replies to $root, a third by an ignored user.
	room.add("$t1", withSender("@bob:x"), withRel("m.thread", "$root"), withSnapshots(1, 1))
	room.add("$t2", withSender("@alice:x"), withRel("m.thread", "$root"), withSnapshots(1, 1))
	room.add("$t3", withSender("@bob:x"), withRel("m.thread", "$root"), withSnapshots(2, 2))
	room.add("$t4", withSender("@bob:x"), withRel("m.thread", "$root"), withSnapshots(2, 2))
	room.add("$spam", withSender("@spam:x"), withRel("m.thread", "$root"), withSnapshots(3, 3))
	room.add("$gone", withSender("@alice:x"), withRel("m.thread", "$root"), withSnapshots(3, 3))
	room.redact("$gone")
	room.add("$o1", withSender("@carol:x"), withRel("m.thread", "$other-root"))
	room.add("$ref1", withRel("m.reference", "$root"))
	room.add("$ref2", withRel("m.reference", "$root"))
	room.add("$edit", withRel("m.replace", "$root"))

	groups, err := db.ThreadsAndReferences(t.Context(), room.nid, []string{"$root", "$other-root"}, "@alice:x", []string{"@spam:x"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range groups {
		got[g.Latest.EventID] = fmt.Sprintf("%s %s n=%d mine=%v", g.Latest.RelType, g.Latest.RelatesTo, g.Count, g.Mine)
	}
	want := map[string]string{
		"$t2":   "m.thread $root n=2 mine=true",
		"$t4":   "m.thread $root n=2 mine=false",
		"$o1":   "m.thread $other-root n=1 mine=false",
		"$ref1": "m.reference $root n=1 mine=true",
		"$ref2": "m.reference $root n=1 mine=true",
	}
	if len(got) != len(want) {
		t.Fatalf("groups = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if groups, err := db.ThreadsAndReferences(t.Context(), room.nid, nil, "@alice:x", nil); err != nil || groups != nil {
		t.Fatalf("no parents: %v, %v", groups, err)
	}
}

func TestLatestEdits(t *testing.T) {
	t.Parallel()
	db := open(t)
	var pos int64
	room := newRelRoom(t, db, "!r:x", &pos)
	other := newRelRoom(t, db, "!o:x", &pos)
	state := func() relOpt { return withStateKey("") }

	room.add("$orig")
	room.add("$valid-old", withRel("m.replace", "$orig"), withNewContent("1"), withTS(100))
	room.add("$valid", withRel("m.replace", "$orig"), withNewContent("2"), withTS(200))
	room.add("$other-sender", withSender("@bob:x"), withRel("m.replace", "$orig"), withNewContent("x"), withTS(900))
	room.add("$other-type", withType("m.sticker"), withRel("m.replace", "$orig"), withNewContent("x"), withTS(900))
	room.add("$no-new-content", withRel("m.replace", "$orig"), withContent(`{"body":"x"}`), withTS(900))
	room.add("$new-content-string", withRel("m.replace", "$orig"), withContent(`{"m.new_content":"x"}`), withTS(900))
	room.add("$state-edit", withRel("m.replace", "$orig"), withNewContent("x"), withTS(900), state())
	room.add("$redacted-edit", withRel("m.replace", "$orig"), withNewContent("x"), withTS(900))
	room.redact("$redacted-edit")
	room.add("$rejected-edit", withRel("m.replace", "$orig"), withNewContent("x"), withTS(900), withRejected())
	room.add("$ignored-edit", withSender("@spam:x"), withRel("m.replace", "$orig"), withNewContent("x"), withTS(900))
	other.add("$other-room", withRel("m.replace", "$orig"), withNewContent("x"), withTS(900))
	// An edit of an edit does not count.
	room.add("$edit-of-edit", withRel("m.replace", "$valid"), withNewContent("x"), withTS(900))
	// Edits of a state event or of a redacted event do not count.
	room.add("$state", state())
	room.add("$state-edited", withRel("m.replace", "$state"), withNewContent("x"), state())
	room.add("$gone")
	room.add("$gone-edited", withRel("m.replace", "$gone"), withNewContent("x"))
	room.redact("$gone")
	// Encrypted edits carry m.new_content inside the ciphertext.
	room.add("$enc", withType("m.room.encrypted"))
	room.add("$enc-edit", withType("m.room.encrypted"), withRel("m.replace", "$enc"), withContent(`{"ciphertext":"x"}`))
	// Same timestamp: the byte-wise larger event ID wins ('a' > 'B'),
	// whatever the database's collation thinks.
	room.add("$tie")
	room.add("$Btie", withRel("m.replace", "$tie"), withNewContent("B"), withTS(500))
	room.add("$atie", withRel("m.replace", "$tie"), withNewContent("a"), withTS(500))
	// One candidate per snapshot group: the latest of the second group.
	room.add("$grouped")
	room.add("$g1", withRel("m.replace", "$grouped"), withNewContent("1"), withTS(100), withSnapshots(1, 1))
	room.add("$g2", withRel("m.replace", "$grouped"), withNewContent("2"), withTS(300), withSnapshots(2, 2))
	room.add("$g3", withRel("m.replace", "$grouped"), withNewContent("3"), withTS(200), withSnapshots(2, 2))

	rows, err := db.LatestEdits(t.Context(), room.nid, []string{"$orig", "$valid", "$state", "$gone", "$enc", "$tie", "$grouped"}, []string{"@spam:x"})
	if err != nil {
		t.Fatal(err)
	}
	got := relEventIDs(rows)
	slices.Sort(got)
	want := []string{"$atie", "$enc-edit", "$g1", "$g2", "$valid"}
	if !slices.Equal(got, want) {
		t.Fatalf("edits = %v, want %v", got, want)
	}
}

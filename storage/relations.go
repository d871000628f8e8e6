package storage

import (
	"context"
	"database/sql"
	"strings"

	"github.com/veche/veche/config"
)

// Relation types the server treats specially (spec: "Relationship types").
const (
	RelThread    = "m.thread"
	RelReplace   = "m.replace"
	RelReference = "m.reference"
)

// MaxBundledReferences bounds the m.reference aggregation of one event:
// the spec lists every reference, but an event referenced thousands of
// times must not make every page that shows it heavy.
const MaxBundledReferences = 50

// A relation whose child was redacted is broken (the redaction strips
// m.relates_to), and rejected or soft-failed children never count: every
// relation query below keeps to accepted, unredacted children.
// Queries on relations write "+room_nid": the unary plus keeps SQLite
// from choosing the room's stream index (and scanning the whole room) over
// the relations index; PostgreSQL reads it as the same column.
const liveChild = `stream_pos IS NOT NULL AND redacted_by IS NULL AND relates_to IS NOT NULL`

// qualified prefixes every column of a column list with a table alias.
func qualified(alias, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// binaryOrder makes ORDER BY compare a text column byte by byte, as the
// spec's "lexicographically largest event_id" means; PostgreSQL would
// otherwise use the database's locale.
func (o ops) binaryOrder(col string) string {
	if o.backend == config.Postgres {
		return col + ` COLLATE "C"`
	}
	return col
}

// newContentIsObject tests that an event's content["m.new_content"] is a
// JSON object.
func (o ops) newContentIsObject(jsonCol string) string {
	if o.backend == config.SQLite {
		return `json_type(` + jsonCol + `, '$.content."m.new_content"') = 'object'`
	}
	return `json_typeof(` + jsonCol + `::json -> 'content' -> 'm.new_content') = 'object'`
}

// RelationsQuery selects the children GET /relations pages through.
type RelationsQuery struct {
	RoomNID  int64
	ParentID string
	// RelType and EventType, when set, must match at every level of the
	// tree: a child reached only through a non-matching one is left out
	// (spec: Relationships API).
	RelType, EventType string
	// Depth is how many levels of relations to follow; 1 is direct
	// children only.
	Depth int
}

// Relations pages through the events relating to q.ParentID, directly or
// through up to q.Depth levels, in topological order: backwards returns
// the children before from, newest first; forwards those at or after it,
// oldest first (the order and points of RoomEventsTopological).
func (o ops) Relations(ctx context.Context, q RelationsQuery, from TopoPoint, backwards bool, limit int) ([]EventRow, error) {
	cmp, order := `>=`, `ASC`
	if backwards {
		cmp, order = `<`, `DESC`
	}
	// UNION drops repeated (event, level) pairs and the level bound ends
	// the walk, so even a relation cycle (impossible with hashed event
	// IDs, but cheap to rule out) terminates.
	return scanEvents(o.q.query(ctx, `WITH RECURSIVE tree(event_id, lvl) AS (
			SELECT event_id, 0 FROM rooms_events WHERE event_id = $2 AND room_nid = $1
			UNION
			SELECT e.event_id, tree.lvl + 1 FROM rooms_events e JOIN tree ON e.relates_to = tree.event_id
			WHERE tree.lvl < $3 AND e.room_nid = $1 AND e.stream_pos IS NOT NULL AND e.redacted_by IS NULL
				AND e.relates_to IS NOT NULL AND ($4 = '' OR e.rel_type = $4) AND ($5 = '' OR e.type = $5)
		)
		SELECT `+eventColumns+` FROM rooms_events WHERE room_nid = $1
			AND event_id IN (SELECT event_id FROM tree WHERE lvl > 0)
			AND (depth, stream_pos) `+cmp+` ($6, $7)
		ORDER BY depth `+order+`, stream_pos `+order+` LIMIT $8`,
		q.RoomNID, q.ParentID, q.Depth, q.RelType, q.EventType, from.Depth, from.Stream, limit))
}

// ThreadRoot is a thread of a room with the position of its latest event.
type ThreadRoot struct {
	RootID string
	Latest TopoPoint
}

// ThreadRoots lists a room's threads by latest activity, most recent
// first: those whose latest event is before the point before. With
// participant set, only threads that user started or replied in.
//
// Paging by the latest event's position neither repeats nor skips a
// thread: a thread that gains a reply between two pages moves above the
// cursor, where the client sees it through sync rather than again here.
func (o ops) ThreadRoots(ctx context.Context, roomNID int64, before TopoPoint, participant string, limit int) ([]ThreadRoot, error) {
	rows, err := o.q.query(ctx, `SELECT relates_to, depth, stream_pos FROM (
			SELECT relates_to, depth, stream_pos,
				ROW_NUMBER() OVER (PARTITION BY relates_to ORDER BY depth DESC, stream_pos DESC) AS rn
			FROM rooms_events WHERE room_nid = $1 AND rel_type = 'm.thread' AND `+liveChild+`
		) t
		WHERE rn = 1 AND (depth, stream_pos) < ($2, $3)
			AND ($4 = ''
				OR EXISTS (SELECT 1 FROM rooms_events m WHERE m.relates_to = t.relates_to AND m.rel_type = 'm.thread'
					AND m.room_nid = $1 AND m.sender = $4 AND m.stream_pos IS NOT NULL AND m.redacted_by IS NULL)
				OR EXISTS (SELECT 1 FROM rooms_events r WHERE r.event_id = t.relates_to AND r.sender = $4))
		ORDER BY depth DESC, stream_pos DESC LIMIT $5`, roomNID, before.Depth, before.Stream, participant, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var t ThreadRoot
		if err := rows.Scan(&t.RootID, &t.Latest.Depth, &t.Latest.Stream); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TimePoint is a position in a room's events ordered by
// (origin_server_ts, stream position).
type TimePoint struct{ TS, Stream int64 }

// EventsByTimestamp pages through a room's visible events in timestamp
// order: forwards those at or after from, earliest first; backwards those
// at or before it, latest first.
func (o ops) EventsByTimestamp(ctx context.Context, roomNID int64, from TimePoint, forward bool, limit int) ([]EventRow, error) {
	q := `SELECT ` + eventColumns + ` FROM rooms_events WHERE room_nid = $1 AND stream_pos IS NOT NULL
		AND (origin_server_ts, stream_pos) >= ($2, $3) ORDER BY origin_server_ts, stream_pos LIMIT $4`
	if !forward {
		q = `SELECT ` + eventColumns + ` FROM rooms_events WHERE room_nid = $1 AND stream_pos IS NOT NULL
		AND (origin_server_ts, stream_pos) <= ($2, $3) ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT $4`
	}
	return scanEvents(o.q.query(ctx, q, roomNID, from.TS, from.Stream, limit))
}

// ChildGroup summarizes children of one parent that share a state
// snapshot pair. History visibility is decided by the state around an
// event, so every event of a group is visible to a user or none is: the
// caller checks Latest alone and knows the verdict for all Count events.
type ChildGroup struct {
	// Latest is the group's topologically latest child (for m.reference,
	// every child is a group of its own).
	Latest EventRow
	Count  int64
	// Mine reports whether the user asked about sent any child of the group.
	Mine bool
}

// ThreadsAndReferences returns, for the given parents in one room, their
// m.thread children grouped as ChildGroup says and up to
// MaxBundledReferences m.reference children each (oldest first), leaving
// out children sent by ignored users. userID decides ChildGroup.Mine.
// One query serves a whole page of parents.
func (o ops) ThreadsAndReferences(ctx context.Context, roomNID int64, parentIDs []string, userID string, ignored []string) ([]ChildGroup, error) {
	if len(parentIDs) == 0 {
		return nil, nil
	}
	const group = `PARTITION BY relates_to, rel_type, state_before_nid, state_after_nid`
	rows, err := o.q.query(ctx, `SELECT `+eventColumns+`, grp_count, grp_mine FROM (
			SELECT `+eventColumns+`,
				ROW_NUMBER() OVER (`+group+` ORDER BY depth DESC, stream_pos DESC) AS grp_rank,
				COUNT(*) OVER (`+group+`) AS grp_count,
				MAX(CASE WHEN sender = $3 THEN 1 ELSE 0 END) OVER (`+group+`) AS grp_mine,
				ROW_NUMBER() OVER (PARTITION BY relates_to, rel_type ORDER BY depth, stream_pos) AS ref_rank
			FROM rooms_events
			WHERE +room_nid = $1 AND relates_to IN `+o.inList("$2", "text")+` AND rel_type IN ('m.thread', 'm.reference')
				AND `+liveChild+` AND sender NOT IN `+o.inList("$4", "text")+`
		) c
		WHERE (rel_type = 'm.thread' AND grp_rank = 1) OR (rel_type = 'm.reference' AND ref_rank <= $5)`,
		roomNID, jsonList(parentIDs), userID, jsonList(nonNil(ignored)), MaxBundledReferences)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ChildGroup
	for rows.Next() {
		var g ChildGroup
		var mine int64
		if g.Latest, err = scanEvent(withExtra{rows, []any{&g.Count, &mine}}); err != nil {
			return nil, err
		}
		g.Mine = mine != 0
		if g.Latest.RelType == RelReference {
			g.Count, g.Mine = 1, g.Latest.Sender == userID
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// LatestEdits returns candidates for the m.replace aggregation of the
// given parents in one room: edits that pass the spec's validity rules
// (same sender and type as the original, neither a state event, the
// original neither an edit nor redacted, m.new_content present unless
// encrypted), the most recent (origin_server_ts, then event ID) of each
// state snapshot pair as ChildGroup explains. The caller keeps the most
// recent visible candidate per parent. One query serves a whole page.
func (o ops) LatestEdits(ctx context.Context, roomNID int64, parentIDs []string, ignored []string) ([]EventRow, error) {
	if len(parentIDs) == 0 {
		return nil, nil
	}
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM (
			SELECT `+qualified("c", eventColumns)+`,
				ROW_NUMBER() OVER (PARTITION BY c.relates_to, c.state_before_nid, c.state_after_nid
					ORDER BY c.origin_server_ts DESC, `+o.binaryOrder("c.event_id")+` DESC) AS grp_rank
			FROM rooms_events c JOIN rooms_events p ON p.event_id = c.relates_to
			WHERE +c.room_nid = $1 AND c.relates_to IN `+o.inList("$2", "text")+` AND c.relates_to IS NOT NULL
				AND c.rel_type = 'm.replace' AND c.stream_pos IS NOT NULL AND c.redacted_by IS NULL
				AND c.state_key IS NULL AND c.sender NOT IN `+o.inList("$3", "text")+`
				AND p.room_nid = c.room_nid AND p.sender = c.sender AND p.type = c.type AND p.state_key IS NULL
				AND p.redacted_by IS NULL AND (p.rel_type IS NULL OR p.rel_type <> 'm.replace')
				AND (c.type = 'm.room.encrypted' OR `+o.newContentIsObject("c.json")+`)
		) e WHERE grp_rank = 1`, roomNID, jsonList(parentIDs), jsonList(nonNil(ignored))))
}

// withExtra scans a row of event columns followed by extra columns.
type withExtra struct {
	rows  *sql.Rows
	extra []any
}

func (w withExtra) Scan(dest ...any) error { return w.rows.Scan(append(dest, w.extra...)...) }

// nonNil keeps a nil list from becoming JSON null, which the list
// subqueries do not read as empty.
func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// ParentsWithChildren returns which of the given events have any related
// event at all: one index lookup that spares the aggregation queries for
// the (common) pages without relations.
func (o ops) ParentsWithChildren(ctx context.Context, parentIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(parentIDs) == 0 {
		return out, nil
	}
	rows, err := o.q.query(ctx, `SELECT DISTINCT relates_to FROM rooms_events WHERE relates_to IS NOT NULL
		AND relates_to IN `+o.inList("$1", "text"), jsonList(parentIDs))
	if err != nil {
		return nil, err
	}
	ids, err := scanStrings(rows)
	for _, id := range ids {
		out[id] = true
	}
	return out, err
}

// AnnotationsBy returns the unredacted annotations (event JSON) a sender
// made of an event with one event type, for duplicate checks.
func (o ops) AnnotationsBy(ctx context.Context, target, sender, typ string) ([]EventRow, error) {
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE relates_to = $1
		AND rel_type = 'm.annotation' AND sender = $2 AND type = $3 AND redacted_by IS NULL AND stream_pos IS NOT NULL`,
		target, sender, typ))
}

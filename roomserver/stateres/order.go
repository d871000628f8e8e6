package stateres

import (
	"cmp"
	"container/heap"
	"encoding/json"
	"math"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

var (
	createKey      = stateKey{Type: spec.MRoomCreate}
	powerLevelsKey = stateKey{Type: spec.MRoomPowerLevels}
)

// creatorPower stands for the infinite power level of v12 room creators; it
// exceeds every level an m.room.power_levels event can express (2^53-1).
const creatorPower = math.MaxInt64

// implicitCreatorPower is what the auth rules give the room creator while the
// room has no m.room.power_levels event.
const implicitCreatorPower = 100

// powerItem carries the sort keys of one event for the reverse topological
// power ordering.
type powerItem struct {
	id    string
	power int64
	ts    spec.Timestamp
}

// powerLess is the spec's comparison: higher sender power first, then older
// origin_server_ts, then smaller event ID.
func powerLess(a, b powerItem) bool {
	if a.power != b.power {
		return a.power > b.power
	}
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.id < b.id
}

type powerHeap []powerItem

func (h powerHeap) Len() int           { return len(h) }
func (h powerHeap) Less(i, j int) bool { return powerLess(h[i], h[j]) }
func (h powerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *powerHeap) Push(x any)        { *h = append(*h, x.(powerItem)) }
func (h *powerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// reverseTopologicalPowerOrder runs Kahn's algorithm over the DAG that the
// auth_events links between the events of set form, always taking the
// smallest ready event by powerLess. Like Synapse and Ruma it uses only those
// direct links: an event is not held back by an ancestor it reaches solely
// through events outside set.
func (r *resolver) reverseTopologicalPowerOrder(set map[string]gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)

	children := make(map[string][]string, len(ids))
	indegree := make(map[string]int, len(ids))
	items := make(map[string]powerItem, len(ids))
	for _, id := range ids {
		ev := set[id]
		items[id] = powerItem{id: id, power: r.senderPower(ev), ts: ev.OriginServerTS()}
		for _, a := range r.auth[id] {
			if _, ok := set[a]; ok {
				children[a] = append(children[a], id)
				indegree[id]++
			}
		}
	}

	h := make(powerHeap, 0, len(ids))
	for _, id := range ids {
		if indegree[id] == 0 {
			h = append(h, items[id])
		}
	}
	heap.Init(&h)
	out := make([]gomatrixserverlib.PDU, 0, len(ids))
	placed := make(map[string]struct{}, len(ids))
	for h.Len() > 0 {
		it := heap.Pop(&h).(powerItem)
		out = append(out, set[it.id])
		placed[it.id] = struct{}{}
		for _, c := range children[it.id] {
			indegree[c]--
			if indegree[c] == 0 {
				heap.Push(&h, items[c])
			}
		}
	}
	if len(out) < len(ids) {
		// Only a cycle, possible with forged v1-format event IDs, leaves
		// events behind; they go last, still in a deterministic order.
		var rest []powerItem
		for _, id := range ids {
			if _, ok := placed[id]; !ok {
				rest = append(rest, items[id])
			}
		}
		slices.SortFunc(rest, func(a, b powerItem) int {
			if powerLess(a, b) {
				return -1
			}
			return 1
		})
		for _, it := range rest {
			out = append(out, set[it.id])
		}
	}
	return out
}

// senderPower is the power level of ev's sender according to ev's own auth
// events, as the reverse topological power ordering requires.
func (r *resolver) senderPower(ev gomatrixserverlib.PDU) int64 {
	id := ev.EventID()
	sender := ev.SenderID()
	create := r.authEventOfKey(id, createKey)
	if r.version.PrivilegedCreators() && create != nil && slices.Contains(creatorsOf(create), string(sender)) {
		return creatorPower
	}
	if pl := r.authEventOfKey(id, powerLevelsKey); pl != nil {
		if c := r.powerLevels(pl); c != nil {
			return c.UserLevel(sender)
		}
		return 0
	}
	if create != nil && legacyCreator(r.version, create) == string(sender) {
		return implicitCreatorPower
	}
	return 0
}

func (r *resolver) powerLevels(pl gomatrixserverlib.PDU) *gomatrixserverlib.PowerLevelContent {
	id := pl.EventID()
	if c, ok := r.plCache[id]; ok {
		return c
	}
	var c *gomatrixserverlib.PowerLevelContent
	if parsed, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl); err == nil {
		c = &parsed
	}
	r.plCache[id] = c
	return c
}

// creatorsOf lists the v12 room creators. It parses the content itself
// because gomatrixserverlib.CreatorsFromCreateEvent panics on bad content.
func creatorsOf(create gomatrixserverlib.PDU) []string {
	creators := []string{string(create.SenderID())}
	var content struct {
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := json.Unmarshal(create.Content(), &content); err == nil {
		creators = append(creators, content.AdditionalCreators...)
	}
	return creators
}

// legacyCreator is the user the auth rules treat as the creator when there are
// no power levels: content.creator up to room version 10, the sender after.
func legacyCreator(version gomatrixserverlib.IRoomVersion, create gomatrixserverlib.PDU) string {
	switch version.Version() {
	case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
		gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
		gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
		gomatrixserverlib.RoomVersionV10, "org.matrix.msc3667", "org.matrix.msc3787":
		var content struct {
			Creator string `json:"creator"`
		}
		if err := json.Unmarshal(create.Content(), &content); err == nil {
			return content.Creator
		}
		return ""
	}
	return string(create.SenderID())
}

// mainlineSort orders events by the mainline ordering based on resolvedPL:
// events whose power level ancestry joins the mainline further back come
// first, then older origin_server_ts, then smaller event ID.
func (r *resolver) mainlineSort(events []gomatrixserverlib.PDU, resolvedPL gomatrixserverlib.PDU) {
	mainline := make(map[string]int)
	for i, p := 0, resolvedPL; p != nil; i++ {
		if _, ok := mainline[p.EventID()]; ok {
			break
		}
		mainline[p.EventID()] = i
		p = r.authEventOfKey(p.EventID(), powerLevelsKey)
	}

	// memo caches, for power level events off the mainline, the position at
	// which their own power level ancestry joins it.
	memo := make(map[string]int)
	position := func(ev gomatrixserverlib.PDU) int {
		pos := math.MaxInt
		var path []string
		for p := r.authEventOfKey(ev.EventID(), powerLevelsKey); p != nil; p = r.authEventOfKey(p.EventID(), powerLevelsKey) {
			pid := p.EventID()
			if i, ok := mainline[pid]; ok {
				pos = i
				break
			}
			if v, ok := memo[pid]; ok {
				pos = v
				break
			}
			if slices.Contains(path, pid) {
				break
			}
			path = append(path, pid)
		}
		for _, pid := range path {
			memo[pid] = pos
		}
		return pos
	}

	slices.SortFunc(events, func(a, b gomatrixserverlib.PDU) int { return cmp.Compare(a.EventID(), b.EventID()) })
	positions := make(map[string]int, len(events))
	for _, ev := range events {
		positions[ev.EventID()] = position(ev)
	}
	slices.SortStableFunc(events, func(a, b gomatrixserverlib.PDU) int {
		if c := cmp.Compare(positions[b.EventID()], positions[a.EventID()]); c != 0 {
			return c
		}
		if c := cmp.Compare(a.OriginServerTS(), b.OriginServerTS()); c != 0 {
			return c
		}
		return cmp.Compare(a.EventID(), b.EventID())
	})
}

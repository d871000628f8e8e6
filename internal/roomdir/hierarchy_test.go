package roomdir

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func TestValidChildrenOrder(t *testing.T) {
	ev := func(key string, ts int64, content string) ChildState {
		return ChildState{Type: SpaceChildType, StateKey: key, OriginServerTS: spec.Timestamp(ts), Content: json.RawMessage(content)}
	}
	// The spec's example, and children that are none.
	in := []ChildState{
		ev("!b:example.org", 1640341000000, `{"order":" ","via":["example.org"]}`),
		ev("!a:example.org", 1640141000000, `{"order":"aaaa","via":["example.org"]}`),
		ev("!c:example.org", 1640841000000, `{"order":"first","via":["example.org"]}`),
		ev("!e:example.org", 1640641000000, `{"via":["example.org"]}`),
		ev("!d:example.org", 1640741000000, `{"via":["example.org"]}`),
		ev("!f:example.org", 1640641000000, `{"order":"\u0001bad","via":["example.org"]}`), // invalid order: by timestamp, after !e
		ev("!g:example.org", 1, `{"order":5,"via":["example.org"]}`),                       // order no string
		ev("!novia:example.org", 1, `{}`),
		ev("!emptyvia:example.org", 1, `{"via":[]}`),
		ev("!badvia:example.org", 1, `{"via":[1]}`),
		ev("not-a-room", 1, `{"via":["example.org"]}`),
		{Type: "m.space.parent", StateKey: "!p:example.org", Content: json.RawMessage(`{"via":["example.org"]}`)},
	}
	var got []string
	for _, c := range ValidChildren(in, false) {
		got = append(got, c.StateKey)
	}
	want := []string{"!b:example.org", "!a:example.org", "!c:example.org", "!g:example.org", "!e:example.org", "!f:example.org", "!d:example.org"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}

	suggested := ValidChildren([]ChildState{
		ev("!s:example.org", 1, `{"via":["example.org"],"suggested":true}`),
		ev("!n:example.org", 1, `{"via":["example.org"]}`),
	}, true)
	if len(suggested) != 1 || suggested[0].StateKey != "!s:example.org" {
		t.Fatalf("suggested only: %+v", suggested)
	}
}

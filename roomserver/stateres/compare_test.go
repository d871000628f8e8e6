package stateres

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestCompareWithGomatrixserverlib runs gomatrixserverlib's resolvers on the
// same inputs as TestResolve and logs where they disagree with this package.
// It never fails on a disagreement: the expectations in resolveCases come
// from the spec, and the point is to document the library's behaviour
// (run with -v to see it).
func TestCompareWithGomatrixserverlib(t *testing.T) {
	for _, tc := range resolveCases {
		for _, ver := range tc.versions {
			t.Run(tc.name+"/v"+string(ver), func(t *testing.T) {
				r, stateSets, want := tc.build(t, ver)
				got, err := Resolve(context.Background(), r.ver, stateSets, r)
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if r.describe(got) != r.describe(want) {
					t.Fatalf("Resolve disagrees with the expected state; see TestResolve")
				}
				authEvents := slices.Collect(maps.Values(r.events))
				var flat []gomatrixserverlib.PDU
				for _, set := range stateSets {
					flat = append(flat, set...)
				}
				lib := map[string]func() ([]gomatrixserverlib.PDU, error){
					"ResolveConflicts": func() ([]gomatrixserverlib.PDU, error) {
						return gomatrixserverlib.ResolveConflicts(ver, flat, authEvents, userIDForSender, r.IsRejected)
					},
					"ResolveConflictsNew": func() ([]gomatrixserverlib.PDU, error) {
						return gomatrixserverlib.ResolveConflictsNew(ver, stateSets, authEvents, userIDForSender, r.IsRejected)
					},
				}
				for _, name := range slices.Sorted(maps.Keys(lib)) {
					res, err := recovered(lib[name])
					switch {
					case err != nil:
						t.Logf("DISAGREE %s: %v", name, err)
					case r.describe(sortedState(toMap(res))) != r.describe(got):
						t.Logf("DISAGREE %s:%s", name, diffStates(r, sortedState(toMap(res)), got))
					default:
						t.Logf("agree %s", name)
					}
				}
			})
		}
	}
}

// recovered runs one of gomatrixserverlib's resolvers, turning its panics into
// errors and silencing the debug output its v2.1 code prints to stdout.
func recovered(f func() ([]gomatrixserverlib.PDU, error)) (res []gomatrixserverlib.PDU, err error) {
	if devNull, derr := os.OpenFile(os.DevNull, os.O_WRONLY, 0); derr == nil {
		stdout := os.Stdout
		os.Stdout = devNull
		defer func() {
			os.Stdout = stdout
			_ = devNull.Close()
		}()
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// diffStates lists, per differing key, gomatrixserverlib's event and ours.
func diffStates(r *testRoom, lib, ours []gomatrixserverlib.PDU) string {
	l, o := toMap(lib), toMap(ours)
	keys := slices.Collect(maps.Keys(l))
	for k := range o {
		if _, ok := l[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b stateKey) int {
		if a.Type != b.Type {
			return strings.Compare(a.Type, b.Type)
		}
		return strings.Compare(a.StateKey, b.StateKey)
	})
	name := func(ev gomatrixserverlib.PDU) string {
		if ev == nil {
			return "(absent)"
		}
		return r.label(ev)
	}
	var sb strings.Builder
	for _, k := range keys {
		if le, oe := l[k], o[k]; le == nil || oe == nil || le.EventID() != oe.EventID() {
			fmt.Fprintf(&sb, "\n  (%s, %q): gomatrixserverlib %s, stateres %s", k.Type, k.StateKey, name(le), name(oe))
		}
	}
	return sb.String()
}

func toMap(evs []gomatrixserverlib.PDU) map[stateKey]gomatrixserverlib.PDU {
	m := make(map[stateKey]gomatrixserverlib.PDU, len(evs))
	for _, ev := range evs {
		m[keyOf(ev)] = ev
	}
	return m
}

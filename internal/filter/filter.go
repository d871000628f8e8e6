// Package filter holds the sync filter (spec: "Filtering") with its
// validation. Filters are stored by the client API and applied by sync.
package filter

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Filter is a sync filter.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender.
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// RoomEventFilter is an EventFilter for room events.
type RoomEventFilter struct {
	EventFilter
	Rooms                     []string `json:"rooms,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter selects what /sync returns about rooms.
type RoomFilter struct {
	Rooms        []string         `json:"rooms,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// Parse decodes and validates a filter. Errors describe the offending
// field and map to M_BAD_JSON.
func Parse(data []byte) (*Filter, error) {
	var f Filter
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("filter does not have the expected shape: %w", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks value constraints that JSON types cannot express.
func (f *Filter) Validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return fmt.Errorf("event_format must be \"client\" or \"federation\", got %q", f.EventFormat)
	}
	for _, field := range f.EventFields {
		if field == "" {
			return fmt.Errorf("event_fields must not contain empty strings")
		}
	}
	if err := f.Presence.validate("presence"); err != nil {
		return err
	}
	if err := f.AccountData.validate("account_data"); err != nil {
		return err
	}
	if r := f.Room; r != nil {
		if err := validateRooms("room", r.Rooms, r.NotRooms); err != nil {
			return err
		}
		for name, rf := range map[string]*RoomEventFilter{"timeline": r.Timeline, "state": r.State, "ephemeral": r.Ephemeral, "account_data": r.AccountData} {
			if rf == nil {
				continue
			}
			if err := rf.EventFilter.validate("room." + name); err != nil {
				return err
			}
			if err := validateRooms("room."+name, rf.Rooms, rf.NotRooms); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *EventFilter) validate(path string) error {
	if e == nil {
		return nil
	}
	if e.Limit != nil && *e.Limit < 1 {
		return fmt.Errorf("%s.limit must be greater than 0", path)
	}
	for _, s := range append(append([]string{}, e.Senders...), e.NotSenders...) {
		if !strings.HasPrefix(s, "@") || !strings.Contains(s, ":") {
			return fmt.Errorf("%s: %q is not a user ID", path, s)
		}
	}
	return nil
}

func validateRooms(path string, lists ...[]string) error {
	for _, l := range lists {
		for _, r := range l {
			if !strings.HasPrefix(r, "!") {
				return fmt.Errorf("%s: %q is not a room ID", path, r)
			}
		}
	}
	return nil
}

// Match reports whether an event of type typ from sender passes the
// filter's types and senders; an empty sender skips the sender rules (for
// data with no sender, such as account data). A nil filter passes all.
func (e *EventFilter) Match(typ, sender string) bool {
	if e == nil {
		return true
	}
	if len(e.Types) > 0 && !matchType(e.Types, typ) {
		return false
	}
	if matchType(e.NotTypes, typ) {
		return false
	}
	if sender != "" {
		if len(e.Senders) > 0 && !slices.Contains(e.Senders, sender) {
			return false
		}
		if slices.Contains(e.NotSenders, sender) {
			return false
		}
	}
	return true
}

// Match applies a RoomEventFilter's types, senders and contains_url to an
// event given by type, sender and content.
func (r *RoomEventFilter) Match(typ, sender string, content []byte) bool {
	if r == nil {
		return true
	}
	if !r.EventFilter.Match(typ, sender) {
		return false
	}
	if r.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(content, &c)
		if (c.URL != nil) != *r.ContainsURL {
			return false
		}
	}
	return true
}

// matchType matches event types against patterns, where '*' matches any
// run of characters at the end of a pattern (spec: filter wildcards).
func matchType(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == "*" || p == typ {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(typ, prefix) {
			return true
		}
	}
	return false
}

package pushrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// The classes of errors the package returns; errors.Is tells them apart,
// and Error() is a message for the client.
var (
	// ErrNotFound: no rule of that kind has that ID.
	ErrNotFound = errors.New("the push rule was not found")
	// ErrInvalidRuleID: the ID cannot name a user-defined rule of the kind.
	ErrInvalidRuleID = errors.New("invalid push rule ID")
	// ErrInvalidRule: the rule's actions, conditions or pattern are wrong.
	ErrInvalidRule = errors.New("invalid push rule")
	// ErrMissingField: the rule lacks a required field.
	ErrMissingField = errors.New("missing push rule field")
	// ErrAnchorNotFound: the before/after rule does not exist.
	ErrAnchorNotFound = errors.New("before/after rule not found")
	// ErrServerDefault: the operation is not possible on (or relative to)
	// a server-default rule.
	ErrServerDefault = errors.New("not possible with a server-default rule")
)

// Error is an error of one of the classes above with its own message.
type Error struct {
	class error
	msg   string
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.class }

func fail(class error, format string, args ...any) error {
	return &Error{class: class, msg: fmt.Sprintf(format, args...)}
}

// ValidateRuleID checks the ID of a user-defined rule of kind k.
func ValidateRuleID(k Kind, ruleID string) error {
	switch {
	case ruleID == "":
		return fail(ErrInvalidRuleID, "The rule ID must not be empty")
	case strings.HasPrefix(ruleID, "."):
		// Spec: such a request MUST be rejected.
		return fail(ErrInvalidRuleID, "Rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(ruleID, `/\`):
		return fail(ErrInvalidRuleID, "Rule IDs must not contain slashes or backslashes")
	}
	switch k {
	case Room:
		if _, err := spec.NewRoomID(ruleID); err != nil {
			return fail(ErrInvalidRuleID, "The rule ID of a room rule must be a room ID")
		}
	case Sender:
		if _, err := spec.NewUserID(ruleID, true); err != nil {
			return fail(ErrInvalidRuleID, "The rule ID of a sender rule must be a user ID")
		}
	}
	return nil
}

// RuleBody is the body of PUT /pushrules/global/{kind}/{ruleId}, its
// fields still JSON so that their absence and wrong types can be told
// apart.
type RuleBody struct {
	Actions    json.RawMessage `json:"actions"`
	Conditions json.RawMessage `json:"conditions"`
	Pattern    json.RawMessage `json:"pattern"`
}

// Rule validates the body as a new user-defined rule of kind k. Fields
// that do not apply to the kind are ignored, as the spec's "only
// applicable to" allows.
func (b RuleBody) Rule(k Kind, ruleID string) (Rule, error) {
	actions, err := ParseActions(b.Actions)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{RuleID: ruleID, Enabled: true, Actions: actions}
	switch k {
	case Override, Underride:
		if r.Conditions, err = ParseConditions(b.Conditions); err != nil {
			return Rule{}, err
		}
	case Content:
		if b.Pattern == nil {
			return Rule{}, fail(ErrMissingField, "Content rules need a pattern")
		}
		if json.Unmarshal(b.Pattern, &r.Pattern) != nil || b.Pattern[0] != '"' || r.Pattern == "" {
			return Rule{}, fail(ErrInvalidRule, "pattern must be a non-empty string")
		}
	}
	return r, nil
}

// ParseActions validates a rule's actions: notify and set_tweak objects.
// The historical dont_notify and coalesce are dropped (spec: servers MUST
// ignore them, for instance by stripping them).
func ParseActions(raw json.RawMessage) ([]Action, error) {
	if raw == nil {
		return nil, fail(ErrMissingField, "actions is required")
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil || raw[0] != '[' {
		return nil, fail(ErrInvalidRule, "actions must be an array")
	}
	out := []Action{}
	for i, item := range items {
		var name string
		if json.Unmarshal(item, &name) == nil && item[0] == '"' {
			switch name {
			case "notify":
				out = append(out, ActionNotify)
			case "dont_notify", "coalesce":
			default:
				return nil, fail(ErrInvalidRule, "Action %d: unknown action %q", i, name)
			}
			continue
		}
		obj, ok := decodeObject(item)
		tweak, isString := obj["set_tweak"].(string)
		if !ok || !isString || tweak == "" {
			return nil, fail(ErrInvalidRule, "Action %d: expected \"notify\" or an object with a set_tweak string", i)
		}
		out = append(out, Action(canonical(obj)))
	}
	return out, nil
}

// ParseConditions validates an override or underride rule's conditions.
// No conditions means the rule matches every event. Conditions of a kind
// the spec does not define are kept: they never match, and a client may
// know them.
func ParseConditions(raw json.RawMessage) ([]Condition, error) {
	out := []Condition{}
	if raw == nil || string(raw) == "null" {
		return out, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil || raw[0] != '[' {
		return nil, fail(ErrInvalidRule, "conditions must be an array")
	}
	for i, item := range items {
		var c Condition
		if len(item) == 0 || item[0] != '{' {
			return nil, fail(ErrInvalidRule, "Condition %d must be an object", i)
		}
		if err := json.Unmarshal(item, &c); err != nil || c.Kind == "" {
			return nil, fail(ErrInvalidRule, "Condition %d needs a kind", i)
		}
		if err := validateCondition(c); err != nil {
			return nil, fail(ErrInvalidRule, "Condition %d (%s): %s", i, c.Kind, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func validateCondition(c Condition) error {
	switch c.Kind {
	case CondEventMatch:
		if c.Key == "" {
			return errors.New("key must be a non-empty string")
		}
		if c.Pattern == nil {
			return errors.New("pattern must be a string")
		}
	case CondEventPropertyIs, CondEventPropertyContains:
		if c.Key == "" {
			return errors.New("key must be a non-empty string")
		}
		if _, ok := c.value(); !ok {
			return errors.New("value must be a string, an integer in [-(2**53)+1, (2**53)-1], a boolean or null")
		}
	case CondRoomMemberCount:
		if _, _, ok := parseMemberCount(c.Is); !ok {
			return errors.New("is must be a decimal integer, optionally prefixed by ==, <, >, <= or >=")
		}
	case CondSenderNotificationPermission:
		if c.Key == "" {
			return errors.New("key must be a non-empty string")
		}
	}
	return nil
}

func decodeObject(raw json.RawMessage) (map[string]any, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var obj map[string]any
	if d.Decode(&obj) != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

// canonical encodes v compactly with sorted keys and without HTML
// escaping, so that equal actions are equal bytes.
func canonical(v any) json.RawMessage {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(v)
	return bytes.TrimRight(b.Bytes(), "\n")
}

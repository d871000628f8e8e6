package pushrules

import "encoding/json"

// The server-default rule IDs of spec v1.19, "Predefined Rules". The
// legacy body-matching rules (.m.rule.contains_display_name,
// .m.rule.contains_user_name, .m.rule.roomnotif) are not among them: v1.17
// removed them (MSC4210) in favour of m.mentions.
const (
	RuleMaster                = ".m.rule.master"
	RuleSuppressNotices       = ".m.rule.suppress_notices"
	RuleInviteForMe           = ".m.rule.invite_for_me"
	RuleMemberEvent           = ".m.rule.member_event"
	RuleIsUserMention         = ".m.rule.is_user_mention"
	RuleIsRoomMention         = ".m.rule.is_room_mention"
	RuleTombstone             = ".m.rule.tombstone"
	RuleReaction              = ".m.rule.reaction"
	RuleServerACL             = ".m.rule.room.server_acl"
	RuleSuppressEdits         = ".m.rule.suppress_edits"
	RuleCall                  = ".m.rule.call"
	RuleEncryptedRoomOneToOne = ".m.rule.encrypted_room_one_to_one"
	RuleRoomOneToOne          = ".m.rule.room_one_to_one"
	RuleMessage               = ".m.rule.message"
	RuleEncrypted             = ".m.rule.encrypted"
)

// Defaults returns the server-default rules for userID, in the spec's
// order. Every call returns fresh slices.
func Defaults(userID string) Rules {
	notify := ActionNotify
	soundDefault := SetTweak("sound", "default")
	highlight := SetTweak("highlight", nil)
	rule := func(id string, conds []Condition, actions ...Action) Rule {
		if conds == nil {
			conds = []Condition{}
		}
		if actions == nil {
			actions = []Action{}
		}
		return Rule{RuleID: id, Default: true, Enabled: true, Conditions: conds, Actions: actions}
	}
	conds := func(c ...Condition) []Condition { return c }

	master := rule(RuleMaster, nil)
	master.Enabled = false
	return Rules{
		Override: []Rule{
			master,
			rule(RuleSuppressNotices, conds(eventMatch("content.msgtype", "m.notice"))),
			rule(RuleInviteForMe, conds(
				eventMatch("type", "m.room.member"),
				eventMatch("content.membership", "invite"),
				eventMatch("state_key", userID),
			), notify, soundDefault),
			rule(RuleMemberEvent, conds(eventMatch("type", "m.room.member"))),
			rule(RuleIsUserMention, conds(propertyCondition(CondEventPropertyContains, `content.m\.mentions.user_ids`, userID)),
				notify, soundDefault, highlight),
			rule(RuleIsRoomMention, conds(
				propertyCondition(CondEventPropertyIs, `content.m\.mentions.room`, true),
				Condition{Kind: CondSenderNotificationPermission, Key: "room"},
			), notify, highlight),
			rule(RuleTombstone, conds(eventMatch("type", "m.room.tombstone"), eventMatch("state_key", "")), notify, highlight),
			rule(RuleReaction, conds(eventMatch("type", "m.reaction"))),
			rule(RuleServerACL, conds(eventMatch("type", "m.room.server_acl"), eventMatch("state_key", ""))),
			rule(RuleSuppressEdits, conds(propertyCondition(CondEventPropertyIs, `content.m\.relates_to.rel_type`, "m.replace"))),
		},
		Content: []Rule{},
		Room:    []Rule{},
		Sender:  []Rule{},
		Underride: []Rule{
			rule(RuleCall, conds(eventMatch("type", "m.call.invite")), notify, SetTweak("sound", "ring")),
			rule(RuleEncryptedRoomOneToOne, conds(
				Condition{Kind: CondRoomMemberCount, Is: "2"},
				eventMatch("type", "m.room.encrypted"),
			), notify, soundDefault),
			rule(RuleRoomOneToOne, conds(
				Condition{Kind: CondRoomMemberCount, Is: "2"},
				eventMatch("type", "m.room.message"),
			), notify, soundDefault),
			rule(RuleMessage, conds(eventMatch("type", "m.room.message")), notify),
			rule(RuleEncrypted, conds(eventMatch("type", "m.room.encrypted")), notify),
		},
	}
}

func eventMatch(key, pattern string) Condition {
	return Condition{Kind: CondEventMatch, Key: key, Pattern: &pattern, path: splitPath(key)}
}

func propertyCondition(kind, key string, value any) Condition {
	raw, _ := json.Marshal(value)
	c := Condition{Kind: kind, Key: key, Value: raw, path: splitPath(key)}
	c.parsed, c.hasParsed = decodeValue(raw)
	return c
}

// defaultRule returns the server-default rule of kind k with the ID, if
// there is one. The user ID only shows in conditions, so any will do.
func defaultRule(k Kind, ruleID string) (Rule, bool) {
	d := defaultTemplate.Of(k)
	for _, r := range *d {
		if r.RuleID == ruleID {
			return r, true
		}
	}
	return Rule{}, false
}

var defaultTemplate = Defaults("")

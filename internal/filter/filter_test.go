package filter

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		name, json string
		ok         bool
	}{
		{"empty", `{}`, true},
		{"full", `{"event_fields":["type","content.body"],"event_format":"client","presence":{"types":["m.presence"],"limit":5},
			"room":{"rooms":["!a:b"],"include_leave":true,"timeline":{"limit":10,"lazy_load_members":true,"not_senders":["@x:y"]},
			"state":{"lazy_load_members":true},"ephemeral":{"types":["m.typing"]},"account_data":{"not_types":["*"]}}}`, true},
		{"unknown fields are kept out", `{"org.example":1}`, true},
		{"bad event_format", `{"event_format":"xml"}`, false},
		{"zero limit", `{"room":{"timeline":{"limit":0}}}`, false},
		{"negative limit", `{"presence":{"limit":-1}}`, false},
		{"limit wrong type", `{"room":{"timeline":{"limit":"10"}}}`, false},
		{"types wrong type", `{"account_data":{"types":"m.tag"}}`, false},
		{"bad room id", `{"room":{"rooms":["#alias:x"]}}`, false},
		{"bad sender", `{"room":{"timeline":{"senders":["bob"]}}}`, false},
		{"empty event field", `{"event_fields":[""]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if (err == nil) != tt.ok {
				t.Fatalf("Parse(%s) error = %v, want ok=%v", tt.json, err, tt.ok)
			}
		})
	}
}

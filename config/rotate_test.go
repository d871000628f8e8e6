package config

import (
	"strings"
	"testing"
)

func TestAddOldSigningKey(t *testing.T) {
	t.Parallel()
	generated, err := Generate(GenerateOptions{ServerName: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	const entry = `"ed25519:a_New1": {key: "` + testPub + `", expired_ts: 1700000000000}`
	tests := []struct {
		name    string
		in      string
		want    string // exact output, when set
		wantErr bool
		keep    []string // old key IDs that must survive
	}{
		{name: "generated file", in: string(generated)},
		{name: "key absent", in: "server_name: example.org\n", want: "server_name: example.org\nold_signing_keys:\n  " + entry + "\n"},
		{name: "no trailing newline", in: "server_name: example.org", want: "server_name: example.org\nold_signing_keys:\n  " + entry + "\n"},
		{name: "empty file", in: "", want: "old_signing_keys:\n  " + entry + "\n"},
		{name: "empty flow map", in: "a: 1\nold_signing_keys: {}\nb: 2\n", want: "a: 1\nold_signing_keys:\n  " + entry + "\nb: 2\n"},
		{name: "null", in: "old_signing_keys:\nb: 2\n", want: "old_signing_keys:\n  " + entry + "\nb: 2\n"},
		{
			name: "block with entries and comments",
			in:   "old_signing_keys: # retired\n    # the first one\n    \"ed25519:a_Old1\": {key: \"" + testPub + "\", expired_ts: 1}\nb: 2\n",
			want: "old_signing_keys: # retired\n    " + entry + "\n    # the first one\n    \"ed25519:a_Old1\": {key: \"" + testPub + "\", expired_ts: 1}\nb: 2\n",
			keep: []string{"ed25519:a_Old1"},
		},
		{name: "non-empty flow map", in: `old_signing_keys: {"ed25519:x": {key: "` + testPub + `", expired_ts: 1}}` + "\n", wantErr: true},
		{name: "broken file", in: "old_signing_keys:\n\t- [\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := AddOldSigningKey([]byte(tt.in), "ed25519:a_New1", testPub, 1700000000000)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "ed25519:a_New1") {
					t.Fatalf("error %v, want one showing the entry to add by hand", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != "" && string(out) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", out, tt.want)
			}
			cfg, _, err := Load(writeConfig(t, string(out)), nil)
			if err != nil {
				t.Fatalf("the result does not load: %v\n%s", err, out)
			}
			if k := cfg.OldSigningKeys["ed25519:a_New1"]; k.Key != testPub || k.ExpiredTS != 1700000000000 {
				t.Errorf("old_signing_keys = %v", cfg.OldSigningKeys)
			}
			for _, id := range tt.keep {
				if _, ok := cfg.OldSigningKeys[id]; !ok {
					t.Errorf("lost %s", id)
				}
			}
		})
	}
}

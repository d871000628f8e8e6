package accounts_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/veche/veche/accounts"
)

func TestValidateLocalpart(t *testing.T) {
	t.Parallel()
	const server = "example.org"
	// "@" + localpart + ":example.org" is 255 bytes at this length.
	longest := 255 - len("@:"+server)
	tests := []struct {
		localpart string
		ok        bool
	}{
		{"alice", true},
		{"a", true},
		{"0123456789", true},
		{"a.b_c=d-e/f+g", true},
		{"._=-/+", true},
		{strings.Repeat("a", longest), true},
		{strings.Repeat("a", longest+1), false},
		{"", false},
		{"Alice", false},
		{"ALICE", false},
		{"al ice", false},
		{" alice", false},
		{"alice\n", false},
		{"al:ice", false},
		{"@alice", false},
		{"al@ice", false},
		{"al#ice", false},
		{"alïce", false},
		{"al\x00ice", false},
	}
	for _, tc := range tests {
		err := accounts.ValidateLocalpart(tc.localpart, server)
		if tc.ok && err != nil {
			t.Errorf("ValidateLocalpart(%q) = %v, want nil", tc.localpart, err)
		}
		if !tc.ok && !errors.Is(err, accounts.ErrInvalidLocalpart) {
			t.Errorf("ValidateLocalpart(%q) = %v, want ErrInvalidLocalpart", tc.localpart, err)
		}
	}
	// The limit counts the whole ID, so a longer server name leaves less room.
	if err := accounts.ValidateLocalpart(strings.Repeat("a", longest), "long."+server); err == nil {
		t.Error("length limit ignores the server name")
	}
}

func TestNewSecret(t *testing.T) {
	t.Parallel()
	a, b := accounts.NewSecret(), accounts.NewSecret()
	if len(a) != 24 || a == b {
		t.Errorf("NewSecret gave %q and %q", a, b)
	}
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			t.Errorf("NewSecret %q is not URL-safe alphanumerics", a)
		}
	}
}

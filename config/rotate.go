package config

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// AddOldSigningKey returns the text of a config file with a retired
// signing key added under old_signing_keys, everything else (comments
// included) left as it was. The file is edited as text rather than
// re-encoded so that operators keep their layout; the result is parsed
// again to make sure the entry landed where Load will read it.
func AddOldSigningKey(data []byte, keyID, publicKey string, expiredTS int64) ([]byte, error) {
	entry := fmt.Sprintf("%q: {key: %q, expired_ts: %d}", keyID, publicKey, expiredTS)
	lines := strings.SplitAfter(string(data), "\n")
	header := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "old_signing_keys:") {
			header = i
			break
		}
	}
	var out []string
	switch {
	case header < 0:
		text := string(data)
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		out = []string{text, "old_signing_keys:\n", "  " + entry + "\n"}
	default:
		rest := strings.TrimSpace(strings.TrimPrefix(lines[header], "old_signing_keys:"))
		var inserted []string
		switch {
		case rest == "" || strings.HasPrefix(rest, "#"):
			// A block mapping (or nothing) follows: match its indentation.
			indent := "  "
			for _, l := range lines[header+1:] {
				t := strings.TrimSpace(l)
				if t == "" || strings.HasPrefix(t, "#") {
					continue
				}
				if w := l[:len(l)-len(strings.TrimLeft(l, " \t"))]; w != "" {
					indent = w
				}
				break
			}
			inserted = []string{lines[header], indent + entry + "\n"}
		case rest == "{}" || strings.HasPrefix(rest, "{} "):
			inserted = []string{"old_signing_keys:\n", "  " + entry + "\n"}
		default:
			return nil, fmt.Errorf("old_signing_keys is written in a form this command cannot edit; add this entry under it by hand:\n  %s", entry)
		}
		out = append(append(append(out, lines[:header]...), inserted...), lines[header+1:]...)
	}
	result := []byte(strings.Join(out, ""))

	var check struct {
		OldSigningKeys map[string]struct {
			Key       string `yaml:"key"`
			ExpiredTS int64  `yaml:"expired_ts"`
		} `yaml:"old_signing_keys"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(result)).Decode(&check); err != nil {
		return nil, fmt.Errorf("adding the key would break the config file (%v); add this entry under old_signing_keys by hand:\n  %s", err, entry)
	}
	if got, ok := check.OldSigningKeys[keyID]; !ok || got.Key != publicKey || got.ExpiredTS != expiredTS {
		return nil, fmt.Errorf("could not add the key to old_signing_keys; add this entry under it by hand:\n  %s", entry)
	}
	return result, nil
}

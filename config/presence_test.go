package config

import "testing"

func TestPresenceEnabled(t *testing.T) {
	// Not parallel: t.Setenv.
	minimal := writeConfig(t, "server_name: example.org\n")
	for _, tt := range []struct {
		name string
		env  string
		want bool
	}{
		{name: "default", want: true},
		{name: "environment", env: "false", want: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("VECHE_PRESENCE_ENABLED", tt.env)
			}
			c, _, err := Load(minimal, nil)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "presence.enabled", c.Presence.Enabled, tt.want)
		})
	}
	data, err := Generate(GenerateOptions{ServerName: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(writeConfig(t, string(data)), map[string]any{"presence.enabled": "false"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "presence.enabled (override of the generated file)", c.Presence.Enabled, false)
}

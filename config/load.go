package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/sirupsen/logrus"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Load reads the config file at path, then VECHE_* variables, then
// overrides (key path → value, from command-line flags). It returns the
// checked config and the keys it did not recognise.
func Load(path string, overrides map[string]any) (*Config, []string, error) {
	v := viper.New()
	for k, val := range Defaults() {
		v.SetDefault(k, val)
	}
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for k, val := range overrides {
		v.Set(k, val)
	}

	var cfg Config
	var md mapstructure.Metadata
	err := v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.Metadata = &md
		dc.ErrorUnused = false
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(requireDurationUnit, flattenDottedKeys, dc.DecodeHook, checkIntRange)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("invalid configuration in %s: %w", path, err)
	}
	restoreKeyIDCase(path, &cfg)
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	cfg.Dir = filepath.Dir(abs)
	unknown := slices.Clone(md.Unused)
	slices.Sort(unknown)
	if err := cfg.Verify(); err != nil {
		return nil, unknown, err
	}
	return &cfg, unknown, nil
}

// restoreKeyIDCase gives signing key IDs back the case they have in the
// file. Viper lower-cases every map key, but key IDs are case-sensitive
// ("ed25519:a_AbCd"): a lower-cased ID names no key, and signatures would
// be published or checked under the wrong name. Keys set from the
// environment or flags cannot be restored; such IDs stay as viper left them.
func restoreKeyIDCase(path string, cfg *Config) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var file struct {
		OldSigningKeys map[string]any `yaml:"old_signing_keys"`
		Federation     struct {
			TrustedKeyServers []struct {
				VerifyKeys map[string]any `yaml:"verify_keys"`
			} `yaml:"trusted_key_servers"`
		} `yaml:"federation"`
	}
	if yaml.Unmarshal(data, &file) != nil {
		return
	}
	cfg.OldSigningKeys = withFileCase(cfg.OldSigningKeys, file.OldSigningKeys)
	if len(file.Federation.TrustedKeyServers) == len(cfg.Federation.TrustedKeyServers) {
		for i := range cfg.Federation.TrustedKeyServers {
			ks := &cfg.Federation.TrustedKeyServers[i]
			ks.VerifyKeys = withFileCase(ks.VerifyKeys, file.Federation.TrustedKeyServers[i].VerifyKeys)
		}
	}
}

// withFileCase renames m's keys to the spelling they have in file.
func withFileCase[V any](m map[string]V, file map[string]any) map[string]V {
	if len(m) == 0 || len(file) == 0 {
		return m
	}
	spelled := make(map[string]string, len(file))
	for k := range file {
		spelled[strings.ToLower(k)] = k
	}
	out := make(map[string]V, len(m))
	for k, v := range m {
		if orig, ok := spelled[k]; ok {
			k = orig
		}
		out[k] = v
	}
	return out
}

// Exists reports whether a config file is at path.
func Exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// ParseLogLevel accepts logrus level names.
func ParseLogLevel(s string) (logrus.Level, error) {
	lvl, err := logrus.ParseLevel(s)
	if err != nil {
		return 0, fmt.Errorf("must be one of trace, debug, info, warn, error, got %q", s)
	}
	return lvl, nil
}

// checkIntRange refuses YAML numbers that do not fit their field. With weak
// typing mapstructure wraps them silently (parallelism: 300 becomes 44,
// iterations: -1 becomes 4294967295); strings are range-checked already.
func checkIntRange(from, to reflect.Type, data any) (any, error) {
	dst := reflect.New(to).Elem()
	src := reflect.ValueOf(data)
	switch {
	case to.Kind() >= reflect.Uint && to.Kind() <= reflect.Uint64:
		switch {
		case src.CanInt() && (src.Int() < 0 || dst.OverflowUint(uint64(src.Int()))):
		case src.CanUint() && dst.OverflowUint(src.Uint()):
		case src.CanFloat() && (src.Float() < 0 || src.Float() >= 1<<64 || dst.OverflowUint(uint64(src.Float()))):
		default:
			return data, nil
		}
	case to.Kind() >= reflect.Int && to.Kind() <= reflect.Int64:
		switch {
		case src.CanInt() && dst.OverflowInt(src.Int()):
		case src.CanUint() && (src.Uint() > 1<<63-1 || dst.OverflowInt(int64(src.Uint()))):
		case src.CanFloat() && (src.Float() < -(1<<63) || src.Float() >= 1<<63 || dst.OverflowInt(int64(src.Float()))):
		default:
			return data, nil
		}
	default:
		return data, nil
	}
	return nil, fmt.Errorf("%v is out of range for %s", data, to)
}

// flattenDottedKeys undoes viper's splitting of map keys at dots: viper
// treats "." as its key path separator, so federation.hosts entry
// "b.example.org: host:8448" reaches us as {b: {example: {org: ...}}}.
// Joining the nested keys back gives the server names. (Viper also
// lower-cases keys; server names are host names, so that is harmless.)
func flattenDottedKeys(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Map || to.Key().Kind() != reflect.String || to.Elem().Kind() != reflect.String {
		return data, nil
	}
	m, ok := data.(map[string]any)
	if !ok {
		return data, nil
	}
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			out[prefix+k] = v
		}
	}
	walk("", m)
	return out, nil
}

// requireDurationUnit refuses bare numbers for durations: they would be
// read as nanoseconds, so "shutdown_timeout: 30" would mean 30ns. Zero is
// the same in any unit and stays allowed.
func requireDurationUnit(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	v := reflect.ValueOf(data)
	if (v.CanInt() && v.Int() != 0) || (v.CanUint() && v.Uint() != 0) || (v.CanFloat() && v.Float() != 0) {
		return nil, fmt.Errorf("%v needs a unit, such as 30s or 5m", data)
	}
	return data, nil
}

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/sirupsen/logrus"
	"github.com/spf13/viper"
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
	})
	if err != nil {
		return nil, nil, fmt.Errorf("invalid configuration in %s: %w", path, err)
	}
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

package main

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/storage"
)

func cmdGenerateConfig(env *environment, args []string) error {
	fs := newFlagSet(env, "generate-config")
	serverName := fs.String("server-name", "", "the server name (required)")
	output := fs.String("output", "", "write to this file instead of stdout")
	dbURL := fs.String("database-url", "", "database URL (default: an SQLite file next to the config)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if *serverName == "" {
		return usageError{"generate-config: --server-name is required"}
	}
	data, err := config.Generate(config.GenerateOptions{ServerName: *serverName, DatabaseURL: *dbURL})
	if err != nil {
		return err
	}
	if *output == "" {
		_, err := env.stdout.Write(data)
		return err
	}
	if err := writeNewFile(*output, data); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "Wrote %s\n", *output)
	return nil
}

func cmdGenerateKeys(env *environment, args []string) error {
	fs := newFlagSet(env, "generate-keys")
	var cf configFlags
	cf.register(fs)
	output := fs.String("output", "", "write the key here (default: signing_key_path from the config)")
	rotate := fs.Bool("rotate", false, "replace the current key, keeping its public half in old_signing_keys of the config")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if *rotate {
		if *output != "" {
			return usageError{"generate-keys: --rotate works on the configured key and takes no --output"}
		}
		return rotateKey(env, &cf)
	}
	path := *output
	if path == "" {
		cfg, err := cf.load(env, newLogger(env, "warn", "text"))
		if err != nil {
			return err
		}
		path = cfg.Path(cfg.SigningKeyPath)
	}
	k, err := signingkey.Create(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "Wrote signing key %s to %s\n", k.ID, path)
	return nil
}

// rotateKey retires the current signing key: its public half goes into
// old_signing_keys (expired now), so that other servers can still check
// what it signed, and a new key replaces it. The config is written first:
// if the key write then fails, running the command again is harmless.
func rotateKey(env *environment, cf *configFlags) error {
	cfg, err := cf.load(env, newLogger(env, "warn", "text"))
	if err != nil {
		return err
	}
	keyPath := cfg.Path(cfg.SigningKeyPath)
	old, err := signingkey.Load(keyPath)
	if err != nil {
		return fmt.Errorf("reading the current key: %w", err)
	}
	if _, done := cfg.OldSigningKeys[string(old.ID)]; !done {
		data, err := os.ReadFile(cf.path)
		if err != nil {
			return err
		}
		pub := base64.RawStdEncoding.EncodeToString(old.Public())
		updated, err := config.AddOldSigningKey(data, string(old.ID), pub, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("%s: %w", cf.path, err)
		}
		if err := replaceFile(cf.path, updated, func(tmp string) error {
			_, _, err := config.Load(tmp, cf.overrides)
			return err
		}); err != nil {
			return fmt.Errorf("updating %s: %w", cf.path, err)
		}
	}
	k, err := signingkey.Generate()
	if err != nil {
		return err
	}
	if err := signingkey.Replace(keyPath, k); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "Retired signing key %s (now in old_signing_keys of %s).\nWrote signing key %s to %s.\nStart (or restart) veche to use it; rotate while it is stopped, or what it signs before the restart will not verify.\n",
		old.ID, cf.path, k.ID, keyPath)
	return nil
}

// replaceFile writes data over path atomically, keeping path's mode,
// after check accepts the new content (given the temporary file's path).
func replaceFile(path string, data []byte, check func(tmp string) error) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if err := f.Chmod(fi.Mode().Perm()); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := check(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func cmdCheckConfig(env *environment, args []string) error {
	fs := newFlagSet(env, "check-config")
	var cf configFlags
	cf.register(fs)
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if _, err := cf.load(env, newLogger(env, "warn", "text")); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s is valid\n", cf.path)
	return nil
}

func cmdUser(env *environment, args []string) error {
	if len(args) == 0 {
		return usageError{"user: expected create, reset-password or deactivate"}
	}
	verb := args[0]
	fs := newFlagSet(env, "user "+verb)
	var cf configFlags
	cf.register(fs)
	var admin, passwordStdin, erase *bool
	switch verb {
	case "create":
		admin = fs.Bool("admin", false, "make the user a server admin")
		passwordStdin = fs.Bool("password-stdin", false, "read the password from the first line of stdin")
	case "reset-password":
		passwordStdin = fs.Bool("password-stdin", false, "read the password from the first line of stdin")
	case "deactivate":
		erase = fs.Bool("erase", false, "also mark the user's messages for erasure")
	default:
		return usageError{fmt.Sprintf("user: unknown verb %q (expected create, reset-password or deactivate)", verb)}
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{fmt.Sprintf("user %s: expected exactly one USERNAME", verb)}
	}
	log := newLogger(env, "warn", "text")
	cfg, err := cf.load(env, log)
	if err != nil {
		return err
	}
	localpart, err := usernameToLocalpart(pos[0], cfg.ServerName)
	if err != nil {
		return err
	}
	backend, dsn, err := cfg.Database.Parse(cfg.Dir)
	if err != nil {
		return err
	}
	db, err := storage.Open(env.ctx, backend, dsn, storage.Options{MaxOpenConns: 2, Log: log})
	if err != nil {
		return err
	}
	defer db.Close()
	svc := accounts.New(accounts.Deps{DB: db, ServerName: spec.ServerName(cfg.ServerName), Password: cfg.Password, Auth: cfg.Auth, Log: log})
	userID := "@" + localpart + ":" + cfg.ServerName

	switch verb {
	case "create":
		password, err := readPassword(env, *passwordStdin, true)
		if err != nil {
			return err
		}
		if err := svc.CheckPasswordPolicy(password); err != nil {
			return errors.New(mxMessage(err))
		}
		if _, err := svc.Create(env.ctx, accounts.NewAccount{Localpart: localpart, Password: password, Admin: *admin}, nil); err != nil {
			return errors.New(mxMessage(err))
		}
		role := "user"
		if *admin {
			role = "admin"
		}
		fmt.Fprintf(env.stdout, "Created %s %s\n", role, userID)
	case "reset-password":
		if err := requireActiveUser(env, db, localpart, userID); err != nil {
			return err
		}
		password, err := readPassword(env, *passwordStdin, true)
		if err != nil {
			return err
		}
		if err := svc.CheckPasswordPolicy(password); err != nil {
			return errors.New(mxMessage(err))
		}
		if err := svc.SetPassword(env.ctx, localpart, password, true, ""); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "Password of %s changed; all its devices were logged out\n", userID)
	case "deactivate":
		if err := requireActiveUser(env, db, localpart, userID); err != nil {
			return err
		}
		if err := svc.Deactivate(env.ctx, localpart, *erase); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "Deactivated %s\n", userID)
	}
	return nil
}

func requireActiveUser(env *environment, db *storage.DB, localpart, userID string) error {
	u, err := db.User(env.ctx, localpart)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no such user %s", userID)
	}
	if err != nil {
		return err
	}
	if u.Deactivated() {
		return fmt.Errorf("%s is deactivated", userID)
	}
	return nil
}

// usernameToLocalpart accepts "alice" or "@alice:server".
func usernameToLocalpart(name, serverName string) (string, error) {
	lp := strings.ToLower(strings.TrimPrefix(name, "@"))
	if l, domain, ok := strings.Cut(lp, ":"); ok {
		if domain != strings.ToLower(serverName) {
			return "", fmt.Errorf("%s is not on this server (%s)", name, serverName)
		}
		lp = l
	}
	if err := accounts.ValidateLocalpart(lp, serverName); err != nil {
		return "", err
	}
	return lp, nil
}

// readPassword reads a password from stdin (--password-stdin) or prompts
// on the terminal without echo, asking twice when confirm is set.
func readPassword(env *environment, fromStdin, confirm bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(env.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("no password on stdin")
		}
		return pw, nil
	}
	f, ok := env.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageError{"stdin is not a terminal: pass the password with --password-stdin"}
	}
	fmt.Fprint(env.stderr, "Password: ")
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(env.stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(env.stderr, "Confirm password: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr)
		if err != nil {
			return "", err
		}
		if string(again) != string(pw) {
			return "", errors.New("passwords do not match")
		}
	}
	return string(pw), nil
}

// mxMessage turns a Matrix error into plain words for the terminal.
func mxMessage(err error) string {
	var me *mxerr.Error
	if errors.As(err, &me) {
		return me.Message
	}
	return err.Error()
}

// Command veche runs the Veche homeserver and its admin verbs.
//
//	veche [serve]              run the server (creates config, key and database on first start)
//	veche generate-config      print or write a commented config file
//	veche generate-keys        write a new signing key (--rotate: retire the current one)
//	veche check-config         validate the config and exit
//	veche user create|reset-password|deactivate USERNAME
//	veche version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/veche/veche/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &environment{ctx: ctx, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	if err := run(env, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "veche:", err)
		}
		os.Exit(exitCode(err))
	}
}

// environment is what a command may touch; tests substitute it.
type environment struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// ready, when set, receives the running server (tests).
	ready func(addr string)
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const usage = `Usage: veche <command> [flags]

Commands:
  serve                 run the server (the default command)
  generate-config       write a commented config file (stdout unless --output)
  generate-keys         write a new signing key ([--rotate] retires the current one)
  check-config          validate the config file and exit
  user create NAME      create an account ([--admin] [--password-stdin])
  user reset-password NAME   set a new password and log out every device
  user deactivate NAME  deactivate an account ([--erase])
  version               print the version

Every command takes --config PATH (default veche.yaml).
Run "veche <command> --help" for the flags of a command.
`

func run(env *environment, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(env.stdout, usage)
			return nil
		}
		return cmdServe(env, args)
	}
	switch args[0] {
	case "serve":
		return cmdServe(env, args[1:])
	case "generate-config":
		return cmdGenerateConfig(env, args[1:])
	case "generate-keys":
		return cmdGenerateKeys(env, args[1:])
	case "check-config":
		return cmdCheckConfig(env, args[1:])
	case "user":
		return cmdUser(env, args[1:])
	case "version":
		fmt.Fprintln(env.stdout, "veche", version.Version)
		return nil
	case "help":
		fmt.Fprint(env.stdout, usage)
		return nil
	default:
		fmt.Fprint(env.stderr, usage)
		return usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("user create alice --admin"), returning the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			// A bad flag is a usage error like a bad command (exit 2);
			// --help keeps ErrHelp so that nothing more is printed.
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func newFlagSet(env *environment, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

// keyValues collects repeated --set key=value flags.
type keyValues map[string]any

func (kv keyValues) String() string { return "" }
func (kv keyValues) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("expected key=value, got %q", s)
	}
	kv[k] = v
	return nil
}

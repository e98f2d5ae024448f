// Package cli is configd's command line: get, put, publish, rollback, diff,
// history, releases, gray, promote, abandon, settings, status, hosts,
// events, watch and audit against a configd server. Output is text for
// files and diffs, one host per line for hosts, and JSON lines otherwise;
// exit 0 on success, 1 on failure, 2 on bad usage.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/internal/jsonl"
	"github.com/opskit/opskit/internal/kit"
)

// Command describes one subcommand.
type Command struct {
	Name, Usage, Summary string
	run                  func(ctx context.Context, e *env, args []string) error
}

// Commands lists the subcommands, for the daemon's help.
func Commands() []Command {
	return []Command{
		{"get", "NS [FILE]", "print a release as JSON, or one file's content (--version, --host)", get},
		{"put", "NS FILE [PATH|-]", "set a file of the namespace's draft from PATH or stdin", put},
		{"publish", "NS", "publish the draft (or --file NAME=PATH ...) as the next release (-m comment)", publish},
		{"gray", "NS", "publish a gray release for --label k=v and/or --percent N hosts", gray},
		{"promote", "NS", "make the gray release current for every host", promote},
		{"abandon", "NS", "end the gray release; its hosts go back to current", abandon},
		{"rollback", "NS", "publish a copy of an earlier release (--to N, default the one before)", rollback},
		{"diff", "NS FROM TO", "unified diff between two releases", diffCmd},
		{"history", "NS", "changes of the namespace as JSON lines", history},
		{"releases", "NS", "releases of the namespace as JSON lines (no contents)", releases},
		{"settings", "NS", "set publish rules: --allow-empty, --schema-file FILE", settings},
		{"status", "NS VERSION", "convergence of a release: which hosts hold it, which failed", status},
		{"hosts", "APP", "live hosts of an app, one per line (--all, --json)", hosts},
		{"events", "[APP]", "follow membership events as JSON lines (--after, --once)", events},
		{"watch", "NS...", "print one JSON line per change of the namespaces", watch},
		{"audit", "", "the audit log as JSON lines (admin)", audit},
		{"fleet", "[list|send|events|...]", "the opskit daemons registered with configd: console, command broadcast, events", fleet},
	}
}

type env struct {
	fs     *pflag.FlagSet
	remote *client.Remote
	out    *jsonl.Writer
	stdout io.Writer
	stdin  io.Reader
}

// usageError makes Main exit 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the subcommand `name` with args; it returns the exit code.
func Main(ctx context.Context, name string, args []string, stdio kit.IO) int {
	var cmd *Command
	for _, c := range Commands() {
		if c.Name == name {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stdio.Err, "configd: unknown command %q\n", name)
		return kit.ExitUsage
	}
	fs := pflag.NewFlagSet("configd "+name, pflag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	servers := fs.StringSlice("server", defaultServers(), "configd server URL or HOST:PORT; repeat or comma-separate for failover (OPSKIT_SERVER)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (else OPSKIT_TOKEN)")
	user := fs.String("user", os.Getenv("USER"), "author name sent when the server runs without tokens")
	fs.Usage = func() {
		fmt.Fprintf(stdio.Err, "Usage: configd %s %s [flags]\n  %s\n\nFlags:\n%s", cmd.Name, cmd.Usage, cmd.Summary, fs.FlagUsages())
	}
	e := &env{fs: fs, out: jsonl.NewWriter(stdio.Out), stdout: stdio.Out, stdin: stdio.In}
	// Each command registers its flags on first call with args == nil.
	cmd.run(ctx, e, nil)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return kit.ExitOK
		}
		fmt.Fprintf(stdio.Err, "configd %s: %v (see --help)\n", name, err)
		return kit.ExitUsage
	}
	token := os.Getenv("OPSKIT_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stdio.Err, "configd %s: --token-file: %v\n", name, err)
			return kit.ExitUsage
		}
		token = strings.TrimSpace(string(b))
	}
	r, err := client.NewRemote(*servers, client.RemoteOptions{Token: token, User: *user})
	if err != nil {
		fmt.Fprintf(stdio.Err, "configd %s: %v\n", name, err)
		return kit.ExitUsage
	}
	e.remote = r
	args = fs.Args()
	if args == nil {
		args = []string{} // nil means "register your flags"
	}
	err = cmd.run(ctx, e, args)
	var ue usageError
	switch {
	case err == nil:
		return kit.ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stdio.Err, "configd %s: %v\nUsage: configd %s %s [flags] (see --help)\n", name, err, cmd.Name, cmd.Usage)
		return kit.ExitUsage
	case ctx.Err() != nil && (name == "watch" || name == "events" || name == "fleet"):
		return kit.ExitOK
	default:
		fmt.Fprintf(stdio.Err, "configd %s: %v\n", name, err)
		return kit.ExitFailure
	}
}

func defaultServers() []string {
	if v := os.Getenv("OPSKIT_SERVER"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"http://127.0.0.1:7160"}
}

func nargs(args []string, min, max int) error {
	if len(args) < min || len(args) > max {
		return usagef("wrong number of arguments")
	}
	return nil
}

func parseLabels(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, l := range list {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, usagef("label %q: want key=value", l)
		}
		out[k] = v
	}
	return out, nil
}

func get(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Int64("version", 0, "release number (default: the one --host should hold, else current)")
		e.fs.String("host", "", "resolve gray releases for this host")
		e.fs.StringSlice("label", nil, "host label key=value (with --host)")
		return nil
	}
	if err := nargs(args, 1, 2); err != nil {
		return err
	}
	version, _ := e.fs.GetInt64("version")
	host, _ := e.fs.GetString("host")
	ls, _ := e.fs.GetStringSlice("label")
	labels, err := parseLabels(ls)
	if err != nil {
		return err
	}
	var rel api.Release
	if version > 0 {
		rel, err = e.remote.Release(ctx, args[0], version)
	} else {
		rel, err = e.remote.Config(ctx, args[0], host, labels)
	}
	if err != nil {
		return err
	}
	if len(args) == 1 {
		return e.out.Write(rel)
	}
	for _, f := range rel.Files {
		if f.Name == args[1] {
			_, err := io.WriteString(e.stdout, f.Content)
			return err
		}
	}
	return fmt.Errorf("release %s@%d has no file %s", args[0], rel.Version, args[1])
}

func put(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 2, 3); err != nil {
		return err
	}
	var data []byte
	var err error
	if len(args) == 2 || args[2] == "-" {
		data, err = io.ReadAll(e.stdin)
	} else {
		data, err = os.ReadFile(args[2])
	}
	if err != nil {
		return err
	}
	if _, err := e.remote.Put(ctx, args[0], args[1], data); err != nil {
		return err
	}
	return e.out.Write(map[string]any{"namespace": args[0], "file": args[1], "bytes": len(data), "sha256": api.Digest(string(data))})
}

func publishFlags(e *env) {
	e.fs.StringP("message", "m", "", "comment recorded with the release")
	e.fs.StringArray("file", nil, "publish NAME=PATH instead of the draft (repeat; PATH - is stdin)")
}

func publishFiles(e *env) ([]api.File, error) {
	specs, _ := e.fs.GetStringArray("file")
	if len(specs) == 0 {
		return nil, nil
	}
	var files []api.File
	for _, s := range specs {
		name, path, ok := strings.Cut(s, "=")
		if !ok {
			return nil, usagef("--file %q: want NAME=PATH", s)
		}
		var data []byte
		var err error
		if path == "-" {
			data, err = io.ReadAll(e.stdin)
		} else {
			data, err = os.ReadFile(path)
		}
		if err != nil {
			return nil, err
		}
		files = append(files, api.NewFile(name, string(data)))
	}
	return files, nil
}

func publish(ctx context.Context, e *env, args []string) error {
	if args == nil {
		publishFlags(e)
		return nil
	}
	return doPublish(ctx, e, args, nil)
}

func doPublish(ctx context.Context, e *env, args []string, g *api.Gray) error {
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	files, err := publishFiles(e)
	if err != nil {
		return err
	}
	msg, _ := e.fs.GetString("message")
	rel, err := e.remote.Publish(ctx, args[0], api.PublishRequest{Comment: msg, Files: files, Gray: g})
	if err != nil {
		return err
	}
	return e.out.Write(rel)
}

func gray(ctx context.Context, e *env, args []string) error {
	if args == nil {
		publishFlags(e)
		e.fs.StringSlice("label", nil, "target hosts with this label key=value (repeat: all must match)")
		e.fs.Int("percent", 0, "target this percentage of hosts (sticky hash of the host name)")
		return nil
	}
	ls, _ := e.fs.GetStringSlice("label")
	labels, err := parseLabels(ls)
	if err != nil {
		return err
	}
	pct, _ := e.fs.GetInt("percent")
	if len(labels) == 0 && pct == 0 {
		return usagef("give --label and/or --percent")
	}
	return doPublish(ctx, e, args, &api.Gray{Labels: labels, Percent: pct})
}

func promote(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	h, err := e.remote.Promote(ctx, args[0])
	if err != nil {
		return err
	}
	return e.out.Write(map[string]any{"namespace": h.Name, "current": h.Current})
}

func abandon(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	h, err := e.remote.Abandon(ctx, args[0])
	if err != nil {
		return err
	}
	return e.out.Write(map[string]any{"namespace": h.Name, "current": h.Current})
}

func rollback(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Int64("to", 0, "release to copy (default: the one before current)")
		e.fs.StringP("message", "m", "", "comment recorded with the release")
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	to, _ := e.fs.GetInt64("to")
	msg, _ := e.fs.GetString("message")
	rel, err := e.remote.Rollback(ctx, args[0], to, msg)
	if err != nil {
		return err
	}
	return e.out.Write(rel)
}

func versionArg(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, usagef("%q is not a release number", s)
	}
	return v, nil
}

func diffCmd(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 3, 3); err != nil {
		return err
	}
	from, err := versionArg(args[1])
	if err != nil {
		return err
	}
	to, err := versionArg(args[2])
	if err != nil {
		return err
	}
	d, err := e.remote.Diff(ctx, args[0], from, to)
	if err != nil {
		return err
	}
	_, err = io.WriteString(e.stdout, d)
	return err
}

func history(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	h, err := e.remote.History(ctx, args[0])
	if err != nil {
		return err
	}
	for _, x := range h {
		if err := e.out.Write(x); err != nil {
			return err
		}
	}
	return nil
}

func releases(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	rels, err := e.remote.Releases(ctx, args[0], 0)
	if err != nil {
		return err
	}
	for _, r := range rels {
		if err := e.out.Write(r); err != nil {
			return err
		}
	}
	return nil
}

func settings(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Bool("allow-empty", false, "allow empty files in the namespace")
		e.fs.String("schema-file", "", "JSON schema every JSON and YAML file must satisfy")
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	allow, _ := e.fs.GetBool("allow-empty")
	st := api.Settings{AllowEmpty: allow}
	if p, _ := e.fs.GetString("schema-file"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		st.Schema = string(b)
	}
	h, err := e.remote.SetSettings(ctx, args[0], st)
	if err != nil {
		return err
	}
	return e.out.Write(map[string]any{"namespace": h.Name, "settings": h.Settings})
}

func status(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 2, 2); err != nil {
		return err
	}
	v, err := versionArg(args[1])
	if err != nil {
		return err
	}
	c, err := e.remote.Status(ctx, args[0], v)
	if err != nil {
		return err
	}
	return e.out.Write(c)
}

func hosts(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Bool("all", false, "include hosts marked down")
		e.fs.Bool("json", false, "print each host as a JSON line (state, labels, last seen)")
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	all, _ := e.fs.GetBool("all")
	asJSON, _ := e.fs.GetBool("json")
	hs, err := e.remote.Hosts(ctx, args[0], all)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if asJSON {
			err = e.out.Write(h)
		} else {
			_, err = fmt.Fprintln(e.stdout, h.Host)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// backoff sleeps before a retry, with jitter so many clients that lost the
// same server do not come back together.
func backoff(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d/2 + rand.N(d)):
	}
}

func events(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Int64("after", 0, "print events after this sequence number")
		e.fs.Bool("once", false, "print the events so far and exit")
		return nil
	}
	if err := nargs(args, 0, 1); err != nil {
		return err
	}
	app := ""
	if len(args) == 1 {
		app = args[0]
	}
	return followEvents(ctx, e, func(ctx context.Context, after int64, timeout time.Duration) ([]api.MemberEvent, int64, error) {
		res, err := e.remote.Events(ctx, app, after, timeout)
		if err != nil {
			return nil, 0, err
		}
		return res.Events, res.Last, nil
	})
}

// followEvents prints the events after --after as JSON lines, long polling
// for more (retrying after errors) unless --once.
func followEvents[E any](ctx context.Context, e *env, fetch func(ctx context.Context, after int64, timeout time.Duration) ([]E, int64, error)) error {
	after, _ := e.fs.GetInt64("after")
	once, _ := e.fs.GetBool("once")
	for {
		timeout := 60 * time.Second
		if once {
			timeout = 0
		}
		evs, last, err := fetch(ctx, after, timeout)
		if err != nil {
			if once || ctx.Err() != nil {
				return err
			}
			backoff(ctx, time.Second)
			continue
		}
		for _, ev := range evs {
			if err := e.out.Write(ev); err != nil {
				return err
			}
		}
		after = last
		if once {
			return nil
		}
	}
}

func watch(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.String("host", "", "watch as this host (gray releases)")
		e.fs.StringSlice("label", nil, "host label key=value")
		e.fs.Bool("from-zero", false, "print the current versions first (as changes from 0)")
		return nil
	}
	if len(args) == 0 {
		return usagef("give at least one namespace")
	}
	host, _ := e.fs.GetString("host")
	ls, _ := e.fs.GetStringSlice("label")
	labels, err := parseLabels(ls)
	if err != nil {
		return err
	}
	held := map[string]int64{}
	fromZero, _ := e.fs.GetBool("from-zero")
	for _, ns := range args {
		if err := api.ValidateNamespace(ns); err != nil {
			return usagef("%v", err)
		}
		held[ns] = 0
		if !fromZero {
			h, err := e.remote.Namespace(ctx, ns)
			if err != nil && !client.IsNotFound(err) {
				return err
			}
			held[ns] = h.VersionFor(host, labels)
		}
	}
	for ctx.Err() == nil {
		changes, err := e.remote.Watch(ctx, held, host, labels, 60*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			backoff(ctx, time.Second)
			continue
		}
		sort.Slice(changes, func(i, j int) bool { return changes[i].Namespace < changes[j].Namespace })
		for _, c := range changes {
			held[c.Namespace] = c.Version
			if err := e.out.Write(map[string]any{"namespace": c.Namespace, "version": c.Version, "time": time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

func audit(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Int("limit", 100, "most recent entries to print")
		return nil
	}
	if err := nargs(args, 0, 0); err != nil {
		return err
	}
	limit, _ := e.fs.GetInt("limit")
	log, err := e.remote.Audit(ctx, limit)
	if err != nil {
		return err
	}
	for _, a := range log {
		if err := e.out.Write(a); err != nil {
			return err
		}
	}
	return nil
}

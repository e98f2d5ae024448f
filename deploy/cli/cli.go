// Package cli is the deploy binary's command line: apply a task locally,
// and status, start, stop, restart, logs, releases and rollback against a
// running agent's API.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deploy/agent"
	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deploy/supervise"
	"github.com/opskit/opskit/internal/kit"
)

// Commands returns the subcommands.
func Commands() []kit.Command {
	return []kit.Command{
		{Name: "apply", Summary: "run one task (TASK.json, or - for stdin) here without a deployer; prints its result as JSON", Run: apply},
		{Name: "status", Summary: "one line per program: NAME STATE pid=PID uptime=... (from a running agent, --addr)", Run: status},
		{Name: "start", Summary: "start PROGRAM", Run: action("start")},
		{Name: "stop", Summary: "stop PROGRAM", Run: action("stop")},
		{Name: "restart", Summary: "restart PROGRAM", Run: action("restart")},
		{Name: "logs", Summary: "print PROGRAM's log (--stream out|err, -f to follow)", Run: logs},
		{Name: "releases", Summary: "list APP's releases, newest first, * marks current", Run: releases},
		{Name: "diag", Summary: "run an allowlisted diagnostic command: diag NAME [ARG...] (diag --list shows them)", Run: diagnose},
		{Name: "rollback", Summary: "switch APP back to VERSION (default: the previous release) and restart its programs", Run: rollback},
	}
}

type client struct {
	addr, token string
	http        *http.Client
}

func clientFlags(fs *pflag.FlagSet) *client {
	c := &client{http: &http.Client{}}
	addr := os.Getenv("OPSKIT_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7171"
	}
	fs.StringVar(&c.addr, "addr", addr, "the agent's address")
	fs.StringVar(&c.token, "api-token", os.Getenv("OPSKIT_API_TOKEN"), "the agent's --api-token, if it has one")
	return c
}

func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("is the agent running? %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			if out != nil {
				_ = json.Unmarshal(b, out)
			}
			return errors.New(e.Error)
		}
		if out != nil && json.Unmarshal(b, out) == nil {
			return fmt.Errorf("HTTP %s", resp.Status)
		}
		return fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func parse(fs *pflag.FlagSet, args []string, stdio kit.IO, want int, usage string) ([]string, int) {
	fs.SetOutput(stdio.Err)
	fs.Usage = func() { fmt.Fprintf(stdio.Err, "usage: deploy %s\n%s", usage, fs.FlagUsages()) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, kit.ExitOK
		}
		return nil, kit.ExitUsage
	}
	if want >= 0 && fs.NArg() != want {
		fs.Usage()
		return nil, kit.ExitUsage
	}
	return fs.Args(), -1
}

func fail(stdio kit.IO, err error) int {
	fmt.Fprintf(stdio.Err, "deploy: %v\n", err)
	return kit.ExitFailure
}

func apply(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("apply", pflag.ContinueOnError)
	var opts agent.ReleaseOptions
	opts.Flags(fs)
	dataDir := fs.String("data-dir", "var/deploy", "the agent's data directory (tasks, packages, default root)")
	remote := fs.Bool("remote", false, "send the task to the running agent at --addr instead, so that it also restarts the app's programs")
	c := clientFlags(fs)
	rest, code := parse(fs, args, stdio, 1, "apply [flags] TASK.json")
	if code >= 0 {
		return code
	}
	var b []byte
	var err error
	if rest[0] == "-" {
		b, err = io.ReadAll(io.LimitReader(stdio.In, 1<<20))
	} else {
		b, err = os.ReadFile(rest[0])
	}
	if err != nil {
		return fail(stdio, err)
	}
	var t release.Task
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		fmt.Fprintf(stdio.Err, "deploy: %s: %v\n", rest[0], err)
		return kit.ExitUsage
	}
	if err := t.Validate(); err != nil {
		fmt.Fprintf(stdio.Err, "deploy: %s: %v\n", rest[0], err)
		return kit.ExitUsage
	}
	var res *release.Result
	var runErr error
	if *remote {
		res = &release.Result{}
		runErr = c.do(ctx, http.MethodPost, "/api/v1/tasks", b, res)
		if res.State == "" {
			return fail(stdio, runErr)
		}
	} else {
		log := slog.New(slog.NewTextHandler(stdio.Err, nil))
		_, applier, err := opts.Applier(*dataDir, log)
		if err != nil {
			return fail(stdio, err)
		}
		res, runErr = applier.Apply(ctx, t)
		if res == nil {
			return fail(stdio, runErr)
		}
	}
	out, _ := json.Marshal(res)
	fmt.Fprintln(stdio.Out, string(out))
	if res.State != release.StateDone {
		if runErr == nil {
			runErr = errors.New(res.Error)
		}
		return fail(stdio, runErr)
	}
	return kit.ExitOK
}

// StatusLine formats one program for `deploy status`.
func StatusLine(st supervise.Status, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-24s %-9s", st.Name, st.State)
	if st.PID != 0 {
		fmt.Fprintf(&b, " pid=%d uptime=%s", st.PID, now.Sub(st.Since).Round(time.Second))
	} else {
		fmt.Fprintf(&b, " since=%s", st.Since.UTC().Format(time.RFC3339))
	}
	if st.Adopted {
		b.WriteString(" adopted")
	}
	if st.Message != "" {
		fmt.Fprintf(&b, " %q", st.Message)
	}
	return b.String()
}

func status(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	c := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print the agent's status as JSON")
	if _, code := parse(fs, args, stdio, 0, "status [flags]"); code >= 0 {
		return code
	}
	var ans agent.StatusAnswer
	if err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &ans); err != nil {
		return fail(stdio, err)
	}
	if *asJSON {
		b, _ := json.Marshal(ans)
		fmt.Fprintln(stdio.Out, string(b))
		return kit.ExitOK
	}
	now := time.Now()
	for _, st := range ans.Programs {
		fmt.Fprintln(stdio.Out, StatusLine(st, now))
	}
	return kit.ExitOK
}

func action(verb string) func(context.Context, []string, kit.IO) int {
	return func(ctx context.Context, args []string, stdio kit.IO) int {
		fs := pflag.NewFlagSet(verb, pflag.ContinueOnError)
		c := clientFlags(fs)
		rest, code := parse(fs, args, stdio, 1, verb+" [flags] PROGRAM")
		if code >= 0 {
			return code
		}
		var st supervise.Status
		err := c.do(ctx, http.MethodPost, "/api/v1/programs/"+url.PathEscape(rest[0])+"/"+verb, nil, &st)
		if err != nil {
			return fail(stdio, err)
		}
		fmt.Fprintln(stdio.Out, StatusLine(st, time.Now()))
		return kit.ExitOK
	}
}

func logs(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("logs", pflag.ContinueOnError)
	c := clientFlags(fs)
	follow := fs.BoolP("follow", "f", false, "keep printing what the program writes")
	stream := fs.String("stream", "out", "out or err")
	tail := fs.Int64("tail", 64<<10, "bytes of the end of the log to print first")
	rest, code := parse(fs, args, stdio, 1, "logs [flags] PROGRAM")
	if code >= 0 {
		return code
	}
	q := url.Values{"stream": {*stream}, "tail": {fmt.Sprint(*tail)}}
	if *follow {
		q.Set("follow", "1")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr+"/api/v1/programs/"+url.PathEscape(rest[0])+"/logs?"+q.Encode(), nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(stdio, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fail(stdio, fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b))))
	}
	if _, err := io.Copy(stdio.Out, resp.Body); err != nil && ctx.Err() == nil {
		return fail(stdio, err)
	}
	return kit.ExitOK
}

func releases(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("releases", pflag.ContinueOnError)
	c := clientFlags(fs)
	rest, code := parse(fs, args, stdio, 1, "releases [flags] APP")
	if code >= 0 {
		return code
	}
	var rels []release.Release
	if err := c.do(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(rest[0])+"/releases", nil, &rels); err != nil {
		return fail(stdio, err)
	}
	for _, r := range rels {
		mark := " "
		if r.Current {
			mark = "*"
		}
		fmt.Fprintf(stdio.Out, "%s %-20s %s\n", mark, r.Version, r.Installed.UTC().Format(time.RFC3339))
	}
	return kit.ExitOK
}

func rollback(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("rollback", pflag.ContinueOnError)
	c := clientFlags(fs)
	rest, code := parse(fs, args, stdio, -1, "rollback [flags] APP [VERSION]")
	if code >= 0 {
		return code
	}
	if len(rest) < 1 || len(rest) > 2 {
		fs.Usage()
		return kit.ExitUsage
	}
	q := ""
	if len(rest) == 2 {
		q = "?version=" + url.QueryEscape(rest[1])
	}
	var ans map[string]string
	if err := c.do(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(rest[0])+"/rollback"+q, nil, &ans); err != nil {
		return fail(stdio, err)
	}
	fmt.Fprintf(stdio.Out, "%s current=%s\n", ans["app"], ans["current"])
	return kit.ExitOK
}

func diagnose(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("diag", pflag.ContinueOnError)
	c := clientFlags(fs)
	list := fs.Bool("list", false, "list the allowed commands")
	fs.SetInterspersed(false)
	rest, code := parse(fs, args, stdio, -1, "diag [flags] NAME [ARG...]")
	if code >= 0 {
		return code
	}
	if *list {
		var cmds []map[string]any
		if err := c.do(ctx, http.MethodGet, "/api/v1/diag", nil, &cmds); err != nil {
			return fail(stdio, err)
		}
		for _, cmd := range cmds {
			b, _ := json.Marshal(cmd)
			fmt.Fprintln(stdio.Out, string(b))
		}
		return kit.ExitOK
	}
	if len(rest) < 1 {
		fs.Usage()
		return kit.ExitUsage
	}
	body, _ := json.Marshal(map[string][]string{"args": rest[1:]})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.addr+"/api/v1/diag/"+url.PathEscape(rest[0]), bytes.NewReader(body))
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(stdio, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fail(stdio, fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b))))
	}
	if _, err := io.Copy(stdio.Out, resp.Body); err != nil {
		return fail(stdio, err)
	}
	if e := resp.Trailer.Get("X-Error"); e != "" {
		return fail(stdio, errors.New(e))
	}
	if resp.Trailer.Get("X-Exit-Code") != "0" {
		return fail(stdio, fmt.Errorf("exit code %s", resp.Trailer.Get("X-Exit-Code")))
	}
	return kit.ExitOK
}

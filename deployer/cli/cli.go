// Package cli is the deployer binary's command line against a running
// deployer's API: submit (and follow) deploys, status, list, history,
// queue, audit, promote, abort, retry, cancel and rollback.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deployer/api"
	"github.com/opskit/opskit/deployer/rollout"
	"github.com/opskit/opskit/deployer/store"
	"github.com/opskit/opskit/internal/kit"
)

// Commands returns the subcommands.
func Commands() []kit.Command {
	return []kit.Command{
		{Name: "submit", Summary: "queue a deploy (--app --env --version --artifact --sha256); --wait prints each host step as a JSON line and exits 1 unless it succeeds", Run: submit},
		{Name: "status", Summary: "status ID: a deploy with its per-host progress (JSON)", Run: status},
		{Name: "list", Summary: "deploys, newest first, one JSON line each (--app, --state)", Run: listCmd("/v1/deploys")},
		{Name: "history", Summary: "ended deploys, newest first, one JSON line each (--app)", Run: listCmd("/v1/history")},
		{Name: "queue", Summary: "active and queued deploys (JSON)", Run: queue},
		{Name: "audit", Summary: "the audit log, newest first, one JSON line each (--app)", Run: audit},
		{Name: "promote", Summary: "promote ID: end a pause (or accept a held failure) and go on", Run: action("promote")},
		{Name: "abort", Summary: "abort ID: stop a running deploy where it is", Run: action("abort")},
		{Name: "retry", Summary: "retry ID: queue an ended or held deploy again (finished hosts are not redone)", Run: action("retry")},
		{Name: "cancel", Summary: "cancel ID: remove a queued deploy", Run: action("cancel")},
		{Name: "rollback", Summary: "rollback APP [VERSION] (--env): hosts back to VERSION, or to their recorded previous release; --wait follows it", Run: rollbackCmd},
	}
}

// Client talks to a deployer's HTTP API; the fleet commands use it too.
type Client struct {
	addr, token string
	http        *http.Client
}

// ClientFlags adds --addr and --token to fs and returns the client they set.
func ClientFlags(fs *pflag.FlagSet) *Client {
	c := &Client{http: &http.Client{}}
	addr := os.Getenv("OPSKIT_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7170"
	}
	fs.StringVar(&c.addr, "addr", addr, "deployer's address (host:port or URL; OPSKIT_ADDR)")
	fs.StringVar(&c.token, "token", os.Getenv("OPSKIT_DEPLOYER_TOKEN"), "bearer token (OPSKIT_DEPLOYER_TOKEN); none needed on loopback")
	return c
}

func (c *Client) base() string {
	if strings.Contains(c.addr, "://") {
		return strings.TrimRight(c.addr, "/")
	}
	return "http://" + c.addr
}

// Send makes a request with body (JSON, if not nil) and returns the
// response when it is a 2xx, for the caller to read and close; any other
// answer becomes an error with the server's message.
func (c *Client) Send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is deployer running at %s? %w", c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, e.Error)
		}
		return nil, fmt.Errorf("HTTP %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return resp, nil
}

// Do is Send with a JSON answer decoded into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.Send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil && err != io.EOF {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func newFlags(name string, stdio kit.IO, usage string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	fs.Usage = func() {
		fmt.Fprintf(stdio.Err, "usage: deployer %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; the int is the exit code when ok is false.
func parse(fs *pflag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return kit.ExitOK, false
		}
		return kit.ExitUsage, false
	}
	return 0, true
}

func fail(stdio kit.IO, err error) int {
	fmt.Fprintf(stdio.Err, "deployer: %v\n", err)
	return kit.ExitFailure
}

func printJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

func submit(ctx context.Context, args []string, stdio kit.IO) int {
	fs := newFlags("submit", stdio, "submit --app APP [--env ENV] --version V --artifact URL --sha256 HEX [--signature B64] [--wait]")
	c := ClientFlags(fs)
	var req rollout.Request
	fs.StringVar(&req.App, "app", "", "app (required)")
	fs.StringVar(&req.Env, "env", rollout.DefaultEnv, "environment")
	fs.StringVar(&req.Version, "version", "", "version (required)")
	fs.StringVar(&req.Artifact, "artifact", "", "the package's URL (required)")
	fs.StringVar(&req.SHA256, "sha256", "", "the package's sha256, hex (required)")
	fs.StringVar(&req.Signature, "signature", "", "base64 ed25519 signature of the package, for agents that require one")
	wait := fs.Bool("wait", false, "follow the deploy: one JSON line per host step, exit 1 unless it succeeds")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if req.App == "" || req.Version == "" || req.Artifact == "" || req.SHA256 == "" || fs.NArg() > 0 {
		fs.Usage()
		return kit.ExitUsage
	}
	var d api.Summary
	if err := c.Do(ctx, http.MethodPost, "/v1/deploys", req, &d); err != nil {
		return fail(stdio, err)
	}
	if !*wait {
		printJSON(stdio.Out, map[string]any{"deploy": d.ID, "state": d.State, "app": d.App, "env": d.Env, "version": d.Version})
		return kit.ExitOK
	}
	fmt.Fprintf(stdio.Err, "deployer: deploy %s queued\n", d.ID)
	return follow(ctx, c, d.ID, 0, stdio)
}

// follow prints a deploy's events after the after'th as JSON lines until
// it ends; exit 0 only if it succeeded.
func follow(ctx context.Context, c *Client, id string, after int64, stdio kit.IO) int {
	for {
		var page api.EventsAnswer
		err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/deploys/%s/events?after=%d&wait=30s", url.PathEscape(id), after), nil, &page)
		if err != nil {
			if ctx.Err() != nil {
				return kit.ExitFailure
			}
			fmt.Fprintf(stdio.Err, "deployer: %v; retrying\n", err)
			select {
			case <-ctx.Done():
				return kit.ExitFailure
			case <-time.After(time.Second):
			}
			continue
		}
		for _, e := range page.Events {
			printJSON(stdio.Out, e)
		}
		after = page.Last
		if store.Terminal(page.State) && len(page.Events) == 0 {
			var d api.Summary
			if err := c.Do(ctx, http.MethodGet, "/v1/deploys/"+url.PathEscape(id), nil, &d); err != nil {
				return fail(stdio, err)
			}
			if d.State == store.Succeeded {
				fmt.Fprintf(stdio.Err, "deployer: deploy %s succeeded on %d hosts\n", id, d.Progress.Done)
				return kit.ExitOK
			}
			fmt.Fprintf(stdio.Err, "deployer: deploy %s %s: %s\n", id, d.State, d.Error)
			return kit.ExitFailure
		}
	}
}

func status(ctx context.Context, args []string, stdio kit.IO) int {
	fs := newFlags("status", stdio, "status ID")
	c := ClientFlags(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return kit.ExitUsage
	}
	var d json.RawMessage
	if err := c.Do(ctx, http.MethodGet, "/v1/deploys/"+url.PathEscape(fs.Arg(0)), nil, &d); err != nil {
		return fail(stdio, err)
	}
	var pretty bytes.Buffer
	_ = json.Indent(&pretty, d, "", "  ")
	fmt.Fprintln(stdio.Out, pretty.String())
	return kit.ExitOK
}

func listCmd(path string) func(context.Context, []string, kit.IO) int {
	return func(ctx context.Context, args []string, stdio kit.IO) int {
		fs := newFlags(strings.TrimPrefix(path, "/v1/"), stdio, "list|history [--app APP] [--env ENV] [--state S,...] [--limit N]")
		c := ClientFlags(fs)
		app := fs.String("app", "", "only this app")
		env := fs.String("env", "", "only this environment")
		state := fs.String("state", "", "only these states (list), comma separated")
		limit := fs.Int("limit", 50, "at most this many")
		if code, ok := parse(fs, args); !ok {
			return code
		}
		q := url.Values{"app": {*app}, "env": {*env}, "limit": {fmt.Sprint(*limit)}}
		if *state != "" {
			q.Set("state", *state)
		}
		var ds []api.Summary
		if err := c.Do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &ds); err != nil {
			return fail(stdio, err)
		}
		for _, d := range ds {
			printJSON(stdio.Out, line(d))
		}
		return kit.ExitOK
	}
}

// line is a deploy's one-line view.
func line(d api.Summary) map[string]any {
	return map[string]any{"deploy": d.ID, "kind": d.Kind, "app": d.App, "env": d.Env, "version": d.Version, "state": d.State,
		"batch": d.Batch + 1, "batches": len(d.BatchSizes), "progress": d.Progress, "user": d.User,
		"created": d.Created, "error": d.Error}
}

func queue(ctx context.Context, args []string, stdio kit.IO) int {
	fs := newFlags("queue", stdio, "queue")
	c := ClientFlags(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	var q struct {
		Active []api.Summary `json:"active"`
		Queued []api.Summary `json:"queued"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/queue", nil, &q); err != nil {
		return fail(stdio, err)
	}
	for _, d := range append(q.Active, q.Queued...) {
		printJSON(stdio.Out, line(d))
	}
	return kit.ExitOK
}

func audit(ctx context.Context, args []string, stdio kit.IO) int {
	fs := newFlags("audit", stdio, "audit [--app APP] [--limit N]")
	c := ClientFlags(fs)
	app := fs.String("app", "", "only this app")
	limit := fs.Int("limit", 100, "at most this many")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	var entries []store.AuditEntry
	if err := c.Do(ctx, http.MethodGet, "/v1/audit?"+url.Values{"app": {*app}, "limit": {fmt.Sprint(*limit)}}.Encode(), nil, &entries); err != nil {
		return fail(stdio, err)
	}
	for _, e := range entries {
		printJSON(stdio.Out, e)
	}
	return kit.ExitOK
}

func action(name string) func(context.Context, []string, kit.IO) int {
	return func(ctx context.Context, args []string, stdio kit.IO) int {
		fs := newFlags(name, stdio, name+" ID")
		c := ClientFlags(fs)
		wait := fs.Bool("wait", false, "follow the deploy afterwards (retry, promote)")
		if code, ok := parse(fs, args); !ok {
			return code
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return kit.ExitUsage
		}
		var d api.Summary
		if err := c.Do(ctx, http.MethodPost, "/v1/deploys/"+url.PathEscape(fs.Arg(0))+"/"+name, nil, &d); err != nil {
			return fail(stdio, err)
		}
		printJSON(stdio.Out, line(d))
		if *wait {
			// From the event this action added on.
			return follow(ctx, c, d.ID, max(d.EventSeq-1, 0), stdio)
		}
		return kit.ExitOK
	}
}

func rollbackCmd(ctx context.Context, args []string, stdio kit.IO) int {
	fs := newFlags("rollback", stdio, "rollback APP [VERSION] [--env ENV] [--wait]")
	c := ClientFlags(fs)
	env := fs.String("env", rollout.DefaultEnv, "environment")
	wait := fs.Bool("wait", false, "follow the rollback: one JSON line per host step, exit 1 unless it succeeds")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return kit.ExitUsage
	}
	req := api.RollbackRequest{Env: *env, Version: fs.Arg(1)}
	var d api.Summary
	if err := c.Do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(fs.Arg(0))+"/rollback", req, &d); err != nil {
		return fail(stdio, err)
	}
	printJSON(stdio.Out, line(d))
	if *wait {
		return follow(ctx, c, d.ID, 0, stdio)
	}
	return kit.ExitOK
}

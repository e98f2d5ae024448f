// Package fleetcli is the deployer binary's command line for fleet work
// other than releases: proc, stats, exec and cron, against a running
// deployer's HTTP API.
package fleetcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deployer/cli"
	"github.com/opskit/opskit/deployer/fleet"
	"github.com/opskit/opskit/deployer/fleet/cron"
	"github.com/opskit/opskit/internal/kit"
)

// Commands returns the subcommands proc, stats, exec and cron.
func Commands() []kit.Command {
	return []kit.Command{
		{Name: "proc", Summary: "start|stop|restart PROGRAM on an app's hosts (--app, --host): one line per host", Run: proc},
		{Name: "stats", Summary: "host statistics of an app's hosts: load, memory, disks, the app's programs' CPU and memory", Run: stats},
		{Name: "exec", Summary: "run an allowed diagnostic command on an app's hosts: exec --app A [--host H] -- NAME ARG...; output prefixed by host", Run: execute},
		{Name: "cron", Summary: "scheduled commands on an app's hosts: cron add|list|rm|runs|run-now", Run: cronCmd},
	}
}

// parse parses flags; want is the exact count of arguments (-1: any,
// -2: at least one). It returns the arguments, or an exit code >= 0.
func parse(fs *pflag.FlagSet, args []string, stdio kit.IO, want int, usage string) ([]string, int) {
	fs.SetOutput(stdio.Err)
	fs.Usage = func() { fmt.Fprintf(stdio.Err, "usage: deployer %s\n%s", usage, fs.FlagUsages()) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdio.Out)
			fmt.Fprintf(stdio.Out, "usage: deployer %s\n%s", usage, fs.FlagUsages())
			return nil, kit.ExitOK
		}
		return nil, kit.ExitUsage
	}
	if (want >= 0 && fs.NArg() != want) || (want == -2 && fs.NArg() == 0) {
		fs.Usage()
		return nil, kit.ExitUsage
	}
	return fs.Args(), -1
}

func fail(stdio kit.IO, err error) int {
	fmt.Fprintf(stdio.Err, "deployer: %v\n", err)
	return kit.ExitFailure
}

func usageError(stdio kit.IO, msg string) int {
	fmt.Fprintf(stdio.Err, "deployer: %s\n", msg)
	return kit.ExitUsage
}

func targetFlags(fs *pflag.FlagSet) *fleet.Target {
	t := &fleet.Target{}
	fs.StringVar(&t.App, "app", "", "the app (required)")
	fs.StringVar(&t.Env, "env", fleet.DefaultEnv, "the app's environment")
	fs.StringVar(&t.Host, "host", "", "only this host (default: all the app's hosts)")
	return t
}

func proc(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("proc", pflag.ContinueOnError)
	t := targetFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	c := cli.ClientFlags(fs)
	rest, code := parse(fs, args, stdio, 2, "proc start|stop|restart --app APP [--host HOST] PROGRAM\n(PROGRAM is the manifest's name, e.g. server, or the agent's APP:NAME)")
	if code >= 0 {
		return code
	}
	if t.App == "" {
		return usageError(stdio, "proc: --app is required")
	}
	var ans fleet.ProcAnswer
	body := fleet.ProcRequest{Target: *t, Program: rest[1]}
	if err := c.Do(ctx, http.MethodPost, "/v1/proc/"+url.PathEscape(rest[0]), body, &ans); err != nil {
		return fail(stdio, err)
	}
	if *asJSON {
		printJSON(stdio.Out, ans)
	} else {
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		for _, r := range ans.Results {
			state, detail := "-", r.Error
			if r.Program != nil {
				state = r.Program.State
				if r.Program.PID != 0 && detail == "" {
					detail = fmt.Sprintf("pid=%d", r.Program.PID)
				}
			}
			result := "ok"
			if !r.OK {
				result = "FAILED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Host, result, state, detail)
		}
		tw.Flush()
	}
	if ans.Failed > 0 {
		fmt.Fprintf(stdio.Err, "deployer: %s %s failed on %d of %d hosts\n", rest[0], ans.Program, ans.Failed, len(ans.Results))
		return kit.ExitFailure
	}
	return kit.ExitOK
}

func stats(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("stats", pflag.ContinueOnError)
	t := targetFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	c := cli.ClientFlags(fs)
	if _, code := parse(fs, args, stdio, 0, "stats --app APP [--host HOST]"); code >= 0 {
		return code
	}
	if t.App == "" {
		return usageError(stdio, "stats: --app is required")
	}
	q := url.Values{"env": {t.Env}}
	if t.Host != "" {
		q.Set("host", t.Host)
	}
	var ans fleet.StatsAnswer
	if err := c.Do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(t.App)+"/hosts/stats?"+q.Encode(), nil, &ans); err != nil {
		return fail(stdio, err)
	}
	if *asJSON {
		printJSON(stdio.Out, ans)
		return kit.ExitOK
	}
	tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tLOAD1\tLOAD5\tMEM USED\tDISKS USED\tPROGRAMS (CPU s, RSS)")
	for _, h := range ans.Hosts {
		if h.Error != "" && h.Time.IsZero() {
			fmt.Fprintf(tw, "%s\terror: %s\n", h.Host, h.Error)
			continue
		}
		var disks, progs []string
		for _, d := range h.Disks {
			disks = append(disks, fmt.Sprintf("%s %.0f%%", d.Mount, d.UsedPercent))
		}
		for _, p := range h.Programs {
			progs = append(progs, fmt.Sprintf("%s %.1fs %s", p.Name, p.CPUSeconds, mib(p.RSSBytes)))
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.0f%% of %s\t%s\t%s\n", h.Host, h.Load1, h.Load5, h.MemUsedPercent, mib(int64(h.MemTotalBytes)), dash(disks), dash(progs))
	}
	tw.Flush()
	return kit.ExitOK
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func dash(items []string) string {
	if len(items) == 0 {
		return "-"
	}
	return strings.Join(items, ", ")
}

// execute streams a diagnostic command's output: "HOST: LINE" as lines
// arrive, then "HOST: [exit N]" (or the refusal or error) for each host.
func execute(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("exec", pflag.ContinueOnError)
	fs.SetInterspersed(false) // the command's own flags are not ours
	t := targetFlags(fs)
	asJSON := fs.Bool("json", false, "print the JSON lines as they come")
	c := cli.ClientFlags(fs)
	rest, code := parse(fs, args, stdio, -2, "exec --app APP [--host HOST] [--] NAME [ARG...]")
	if code >= 0 {
		return code
	}
	if t.App == "" {
		return usageError(stdio, "exec: --app is required")
	}
	resp, err := c.Send(ctx, http.MethodPost, "/v1/exec", fleet.ExecRequest{Target: *t, Name: rest[0], Args: rest[1:]})
	if err != nil {
		return fail(stdio, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var summary *fleet.ExecEvent
	for sc.Scan() {
		if *asJSON {
			fmt.Fprintln(stdio.Out, sc.Text())
		}
		var ev fleet.ExecEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fail(stdio, fmt.Errorf("bad line from deployer: %w", err))
		}
		if *asJSON {
			if ev.Type == "summary" {
				summary = &ev
			}
			continue
		}
		switch ev.Type {
		case "line":
			fmt.Fprintf(stdio.Out, "%s: %s\n", ev.Host, ev.Line)
		case "end":
			switch {
			case ev.Refused:
				fmt.Fprintf(stdio.Out, "%s: [refused: %s]\n", ev.Host, ev.Error)
			case ev.Error != "":
				fmt.Fprintf(stdio.Out, "%s: [exit %d: %s]\n", ev.Host, ev.ExitCode, ev.Error)
			default:
				fmt.Fprintf(stdio.Out, "%s: [exit %d]\n", ev.Host, ev.ExitCode)
			}
		case "summary":
			summary = &ev
		}
	}
	if err := sc.Err(); err != nil {
		return fail(stdio, fmt.Errorf("output cut short: %w", err))
	}
	switch {
	case summary == nil:
		return fail(stdio, errors.New("output cut short: no summary from deployer"))
	case summary.Error != "":
		return fail(stdio, errors.New(summary.Error))
	case summary.Failed > 0:
		fmt.Fprintf(stdio.Err, "deployer: %s failed on %d of %d hosts\n", rest[0], summary.Failed, summary.Hosts)
		return kit.ExitFailure
	}
	return kit.ExitOK
}

func cronCmd(ctx context.Context, args []string, stdio kit.IO) int {
	const usage = "usage: deployer cron add|list|rm|runs|run-now ... (deployer cron COMMAND --help)\n"
	if len(args) == 0 {
		fmt.Fprint(stdio.Err, usage)
		return kit.ExitUsage
	}
	switch args[0] {
	case "add":
		return cronAdd(ctx, args[1:], stdio)
	case "list", "ls":
		return cronList(ctx, args[1:], stdio)
	case "rm":
		return cronByID(ctx, args[1:], stdio, "rm", http.MethodDelete, "")
	case "run-now":
		return cronByID(ctx, args[1:], stdio, "run-now", http.MethodPost, "/run")
	case "runs":
		return cronRuns(ctx, args[1:], stdio)
	case "-h", "--help", "help":
		fmt.Fprint(stdio.Out, usage)
		return kit.ExitOK
	}
	fmt.Fprintf(stdio.Err, "deployer: cron: unknown command %q\n%s", args[0], usage)
	return kit.ExitUsage
}

func cronAdd(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("cron add", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	app := fs.String("app", "", "the app (required)")
	env := fs.String("env", fleet.DefaultEnv, "the app's environment")
	schedule := fs.String("schedule", "", `five-field cron schedule, e.g. "*/5 * * * *" (in deployer's --cron-timezone, UTC by default), or @hourly, @daily...`)
	target := fs.String("target", "all", "hosts of each run: all, one (in turn) or batch:N (the next N in turn)")
	c := cli.ClientFlags(fs)
	rest, code := parse(fs, args, stdio, -2, `cron add --app APP --schedule "*/5 * * * *" [--target all|one|batch:N] [--] NAME [ARG...]`)
	if code >= 0 {
		return code
	}
	if *app == "" || *schedule == "" {
		return usageError(stdio, "cron add: --app and --schedule are required")
	}
	job := cron.Job{App: *app, Env: *env, Schedule: *schedule, Target: *target, Name: rest[0], Args: rest[1:]}
	var v cron.JobView
	if err := c.Do(ctx, http.MethodPost, "/v1/cron", job, &v); err != nil {
		return fail(stdio, err)
	}
	printJSON(stdio.Out, v)
	return kit.ExitOK
}

func cronList(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("cron list", pflag.ContinueOnError)
	app := fs.String("app", "", "only this app's jobs")
	asJSON := fs.Bool("json", false, "print the jobs as JSON")
	c := cli.ClientFlags(fs)
	if _, code := parse(fs, args, stdio, 0, "cron list [--app APP]"); code >= 0 {
		return code
	}
	path := "/v1/cron"
	if *app != "" {
		path += "?app=" + url.QueryEscape(*app)
	}
	var jobs []cron.JobView
	if err := c.Do(ctx, http.MethodGet, path, nil, &jobs); err != nil {
		return fail(stdio, err)
	}
	if *asJSON {
		printJSON(stdio.Out, jobs)
		return kit.ExitOK
	}
	tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPP\tSCHEDULE\tTARGET\tCOMMAND\tNEXT\tLAST")
	for _, j := range jobs {
		last := "-"
		if j.Last != nil {
			last = fmt.Sprintf("#%d %s %s", j.Last.Seq, j.Last.Start.Format(time.RFC3339), runOutcome(*j.Last))
		}
		next := "-"
		if !j.Next.IsZero() {
			next = j.Next.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.App, j.Env, j.Schedule, j.Target, strings.Join(append([]string{j.Name}, j.Args...), " "), next, last)
	}
	tw.Flush()
	return kit.ExitOK
}

func runOutcome(r cron.Run) string {
	if r.Error != "" {
		return "error: " + r.Error
	}
	failed := 0
	for _, h := range r.Hosts {
		if !h.OK() {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Sprintf("failed on %d/%d", failed, len(r.Hosts))
	}
	return fmt.Sprintf("ok on %d", len(r.Hosts))
}

func cronByID(ctx context.Context, args []string, stdio kit.IO, name, method, suffix string) int {
	fs := pflag.NewFlagSet("cron "+name, pflag.ContinueOnError)
	c := cli.ClientFlags(fs)
	rest, code := parse(fs, args, stdio, 1, "cron "+name+" ID")
	if code >= 0 {
		return code
	}
	var ans json.RawMessage
	if err := c.Do(ctx, method, "/v1/cron/"+url.PathEscape(rest[0])+suffix, nil, &ans); err != nil {
		return fail(stdio, err)
	}
	fmt.Fprintln(stdio.Out, strings.TrimSpace(string(ans)))
	if suffix == "/run" {
		var r cron.Run
		if json.Unmarshal(ans, &r) == nil && !r.OK() {
			fmt.Fprintf(stdio.Err, "deployer: run %s #%d %s\n", r.Job, r.Seq, runOutcome(r))
			return kit.ExitFailure
		}
	}
	return kit.ExitOK
}

func cronRuns(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("cron runs", pflag.ContinueOnError)
	limit := fs.Int("limit", 20, "newest runs shown (0: all kept)")
	asJSON := fs.Bool("json", false, "print the runs as JSON")
	c := cli.ClientFlags(fs)
	rest, code := parse(fs, args, stdio, 1, "cron runs ID [--limit N]")
	if code >= 0 {
		return code
	}
	var runs []cron.Run
	if err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/cron/%s/runs?limit=%d", url.PathEscape(rest[0]), *limit), nil, &runs); err != nil {
		return fail(stdio, err)
	}
	if *asJSON {
		printJSON(stdio.Out, runs)
		return kit.ExitOK
	}
	for _, r := range runs {
		fmt.Fprintf(stdio.Out, "#%d %s %s %s\n", r.Seq, r.Trigger, r.Start.Format(time.RFC3339), runOutcome(r))
		for _, h := range r.Hosts {
			status := fmt.Sprintf("exit %d", h.ExitCode)
			if h.Refused {
				status = "refused"
			}
			if h.Error != "" {
				status += ": " + h.Error
			}
			fmt.Fprintf(stdio.Out, "  %s: [%s] %d bytes\n", h.Host, status, h.Bytes)
		}
	}
	return kit.ExitOK
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// fleetSub is one `configd fleet SUB` command. Like the top-level
// commands, run registers its flags when args is nil; all subcommands share
// one flag set, so each defines only flags no other one does (--json is
// defined once, by fleet itself).
type fleetSub struct {
	usage, summary string
	run            func(ctx context.Context, e *env, args []string) error
}

func fleetSubcommands() map[string]fleetSub {
	return map[string]fleetSub{
		"list":   {"", "one line per daemon: kind, host, pid, uptime, version, health, heap, goroutines, rates (the default)", fleetList},
		"send":   {"--dest KIND|HOST|ID|all COMMAND [ARGS]", "run an admin command (loglevel LEVEL, reload, stop, ...) on the chosen daemons; exit 1 if any failed", fleetSend},
		"events": {"", "daemon join / leave / rejoin events as JSON lines (--after, --once)", fleetEvents},
		"dye":    {"MATCH [--for 10m] [--id ID]", "set a dye rule (e.g. 'endpoint=web01,metric=cpu.idle') on every daemon and print its id", fleetDye},
		"trace":  {"DYE-ID", "the dyed items' journey: every daemon's trace records of the dye, in time order", fleetTrace},
	}
}

// fleetUsage describes the fleet subcommands, for help texts.
func fleetUsage() string {
	subs := fleetSubcommands()
	names := make([]string, 0, len(subs))
	for n := range subs {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sb, "  configd fleet %s %s\n      %s\n", n, subs[n].usage, subs[n].summary)
	}
	return sb.String()
}

// fleet is `configd fleet [SUB] ...`: the opskit daemons registered with
// configd (see the "Fleet view" section of the README).
func fleet(ctx context.Context, e *env, args []string) error {
	subs := fleetSubcommands()
	if args == nil {
		base := e.fs.Usage
		e.fs.Usage = func() {
			base()
			fmt.Fprintf(e.fs.Output(), "\nFleet commands:\n%s", fleetUsage())
		}
		e.fs.Bool("json", false, "print JSON lines instead of text")
		names := make([]string, 0, len(subs))
		for n := range subs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			subs[n].run(ctx, e, nil)
		}
		return nil
	}
	if len(args) == 0 {
		args = []string{"list"}
	}
	sub, ok := subs[args[0]]
	if !ok {
		return usagef("unknown fleet command %q; commands:\n%s", args[0], fleetUsage())
	}
	return sub.run(ctx, e, args[1:])
}

func fleetList(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil
	}
	if err := nargs(args, 0, 0); err != nil {
		return err
	}
	daemons, err := e.remote.Fleet(ctx)
	if err != nil {
		return err
	}
	if asJSON, _ := e.fs.GetBool("json"); asJSON {
		for _, d := range daemons {
			if err := e.out.Write(d); err != nil {
				return err
			}
		}
		return nil
	}
	return writeFleetTable(e.stdout, daemons)
}

// writeFleetTable prints the console: one aligned line per daemon.
func writeFleetTable(w io.Writer, daemons []api.FleetDaemon) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tHOST\tPID\tSTATE\tUPTIME\tVERSION\tHEALTH\tHEAP\tGOROUTINES\tRATES")
	for _, d := range daemons {
		uptime, health, heap, gor, rates := "-", "-", "-", "-", "-"
		if d.State == api.DaemonUp {
			uptime = (time.Duration(d.UptimeSeconds) * time.Second).String()
			if st := d.Stats; st != nil {
				health = st.Health
				heap = humanBytes(st.HeapBytes)
				gor = strconv.FormatFloat(st.Goroutines, 'f', 0, 64)
				rates = formatRates(st.Rates)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			d.ID, d.Kind, d.Host, d.PID, d.State, uptime, d.Version, health, heap, gor, rates)
	}
	return tw.Flush()
}

// formatRates prints rates as name=value, sorted by name.
func formatRates(rates map[string]float64) string {
	if len(rates) == 0 {
		return "-"
	}
	names := make([]string, 0, len(rates))
	for n := range rates {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.FormatFloat(rates[n], 'f', 1, 64)
	}
	return strings.Join(parts, " ")
}

func humanBytes(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(b, 'f', 0, 64) + units[i]
	}
	return strconv.FormatFloat(b, 'f', 1, 64) + units[i]
}

func fleetSend(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.String("dest", "", "which daemons: all, a kind (judge), a host name or an instance id (HOST:PORT)")
		return nil
	}
	dest, _ := e.fs.GetString("dest")
	if dest == "" {
		return usagef("give --dest KIND|HOST|ID|all")
	}
	if len(args) == 0 {
		return usagef("give a command: loglevel LEVEL, reload, stop or a daemon's own command")
	}
	res, err := e.remote.FleetSend(ctx, api.FleetSendRequest{Dest: dest, Command: args[0], Args: args[1:]})
	if err != nil {
		return err
	}
	asJSON, _ := e.fs.GetBool("json")
	failed := 0
	for _, r := range res.Results {
		if !r.OK {
			failed++
		}
		if asJSON {
			err = e.out.Write(r)
		} else {
			_, err = fmt.Fprintln(e.stdout, formatSendResult(r))
		}
		if err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d daemons failed %s", failed, len(res.Results), args[0])
	}
	return nil
}

// formatSendResult is one daemon's answer on one line: id, kind, host,
// ok or error, the HTTP status and the answer (compact JSON) or error.
func formatSendResult(r api.FleetSendResult) string {
	verdict, detail := "ok", string(r.Answer)
	if !r.OK {
		verdict, detail = "error", r.Error
	}
	if len(r.Answer) > 0 {
		var buf bytes.Buffer
		if json.Compact(&buf, r.Answer) == nil {
			detail = buf.String()
		}
		if !r.OK && r.Error != "" {
			detail = r.Error
		}
	}
	return fmt.Sprintf("%s %s %s %s %d %s", r.ID, r.Kind, r.Host, verdict, r.Status, strings.TrimSpace(detail))
}

func fleetEvents(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Int64("after", 0, "print events after this sequence number (events)")
		e.fs.Bool("once", false, "print the events so far and exit (events)")
		return nil
	}
	if err := nargs(args, 0, 0); err != nil {
		return err
	}
	return followEvents(ctx, e, func(ctx context.Context, after int64, timeout time.Duration) ([]api.FleetEvent, int64, error) {
		res, err := e.remote.FleetEvents(ctx, after, timeout)
		if err != nil {
			return nil, 0, err
		}
		return res.Events, res.Last, nil
	})
}

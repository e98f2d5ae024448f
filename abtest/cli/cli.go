// Package cli holds abtest's subcommands: `assign` (pipe mode) and `report`.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/abtest/ramp"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/abtest/server"
	"github.com/opskit/opskit/abtest/store"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Assign is `abtest assign --experiments FILE --experiment E [--attr k=v]...`:
// reads unit ids, one per line, and prints "id<TAB>variant" for each ("-"
// when the unit is not in the experiment). It logs no exposures.
func Assign(_ context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	fs := pflag.NewFlagSet("assign", pflag.ContinueOnError)
	fs.SetOutput(errOut)
	file := fs.String("experiments", "experiments.yaml", "experiment config file")
	experiment := fs.String("experiment", "", "experiment key (required)")
	attrs := fs.StringArray("attr", nil, "attribute of every unit as key=value (repeatable)")
	at := fs.String("time", "", "evaluate at this RFC 3339 time instead of now")
	dataDir := fs.String("data-dir", filepath.Join("var", "abtest"), "the daemon's data directory, for ramped experiments' current coverage (first step if absent)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *experiment == "" || fs.NArg() > 0 {
		fmt.Fprintln(errOut, "assign: --experiment is required and takes ids on stdin")
		return exitUsage
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			fmt.Fprintf(errOut, "assign: --time: %v\n", err)
			return exitUsage
		}
		now = t
	}
	attributes := map[string]any{}
	for _, kv := range *attrs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(errOut, "assign: --attr %q is not key=value\n", kv)
			return exitUsage
		}
		attributes[k] = server.QueryValue(v)
	}
	a, err := loadRamped(*file, filepath.Join(*dataDir, "ramp.json"))
	if err != nil {
		fmt.Fprintf(errOut, "assign: %v\n", err)
		return exitFailure
	}
	if a.Variants(*experiment) == nil {
		fmt.Fprintf(errOut, "assign: no experiment %q in %s\n", *experiment, *file)
		return exitFailure
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	w := bufio.NewWriterSize(out, 64<<10)
	defer w.Flush()
	u := sdk.Unit{Attributes: attributes}
	for sc.Scan() {
		id := strings.TrimRight(sc.Text(), "\r")
		if id == "" {
			continue
		}
		u.ID = id
		r := a.Evaluate(*experiment, u, now)
		variant := "-"
		if r.InExperiment {
			variant = r.Variant
		}
		w.WriteString(id)
		w.WriteByte('\t')
		w.WriteString(variant)
		w.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(errOut, "assign: reading ids: %v\n", err)
		return exitFailure
	}
	if err := w.Flush(); err != nil {
		return exitFailure
	}
	return exitOK
}

// loadRamped compiles the config with ramped experiments at the coverage
// the daemon's ramp state gives them.
func loadRamped(file, stateFile string) (*sdk.Assigner, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read experiment config: %w", err)
	}
	cfg, err := sdk.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	states, err := ramp.LoadStates(stateFile)
	if err != nil {
		return nil, err
	}
	a, err := sdk.New(ramp.Effective(cfg, states))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return a, nil
}

// Report is `abtest report --experiment E [--metric M] [--format table|json|html]`,
// computed from the local data directory or asked of a running daemon (--addr).
func Report(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := pflag.NewFlagSet("report", pflag.ContinueOnError)
	fs.SetOutput(errOut)
	experiment := fs.String("experiment", "", "experiment key (required)")
	metric := fs.String("metric", "", "conversion or metric name (empty: units and sample ratio only)")
	format := fs.String("format", "table", "output: table, json or html")
	file := fs.String("experiments", "", "experiment config file (variants, weights and start for the pre-period)")
	dataDir := fs.String("data-dir", filepath.Join("var", "abtest"), "the daemon's data directory (events are read from its events/ folder)")
	addr := fs.String("addr", "", "ask the daemon at HOST:PORT instead of reading the data directory")
	iqrK := fs.Float64("iqr-k", 1.5, "boxplot fence multiplier k for outlier removal (0 keeps every unit)")
	cuped := fs.Bool("cuped", false, "adjust by each unit's pre-period value of the metric (events before the experiment's start)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *experiment == "" || fs.NArg() > 0 {
		fmt.Fprintln(errOut, "report: --experiment is required")
		return exitUsage
	}
	if *format != "table" && *format != "json" && *format != "html" {
		fmt.Fprintf(errOut, "report: unknown --format %q (table, json, html)\n", *format)
		return exitUsage
	}
	if *addr != "" {
		return remoteReport(ctx, *addr, *experiment, *metric, *format, *iqrK, *cuped, out, errOut)
	}
	a, _ := sdk.New(nil) // without a config: variants as seen, equal weights
	if *file != "" {
		var err error
		if a, err = sdk.LoadFile(*file); err != nil {
			fmt.Fprintf(errOut, "report: %v\n", err)
			return exitFailure
		}
	}
	opt := server.ReportOptions(a, *experiment, *metric, *iqrK, *cuped)
	rep, err := report.Compute(store.DirScanner(filepath.Join(*dataDir, "events")), *experiment, opt)
	if err != nil {
		fmt.Fprintf(errOut, "report: %v\n", err)
		return exitFailure
	}
	switch *format {
	case "json":
		err = report.WriteJSON(out, rep)
	case "html":
		err = report.WriteHTML(out, rep)
	default:
		err = report.WriteTable(out, rep)
	}
	if err != nil {
		fmt.Fprintf(errOut, "report: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func remoteReport(ctx context.Context, addr, experiment, metric, format string, iqrK float64, cuped bool, out, errOut io.Writer) int {
	q := url.Values{"format": {format}, "iqr_k": {fmt.Sprint(iqrK)}}
	if metric != "" {
		q.Set("metric", metric)
	}
	if cuped {
		q.Set("cuped", "true")
	}
	u := "http://" + addr + "/v1/report/" + url.PathEscape(experiment) + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintf(errOut, "report: %v\n", err)
		return exitUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(errOut, "report: %v\n", err)
		return exitFailure
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(errOut, "report: %s: %s\n", resp.Status, strings.TrimSpace(string(b)))
		return exitFailure
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return exitFailure
	}
	return exitOK
}

// Command loadgen sends a deterministic metrics workload to transfer,
// carbon-cache or rrdcached as fast as the target takes it, waits until the
// target has stored it, and prints one JSON line with the rates.
//
//	loadgen --mode graphite --addr 127.0.0.1:7121 --stored-metric 'NAME' --metrics-url http://127.0.0.1:7120/metrics
//	loadgen --mode graphite --addr 127.0.0.1:2003 --whisper-dir DIR
//	loadgen --mode falcon --addr 127.0.0.1:7120
//	loadgen --mode rrdcached --addr unix:DIR/rrdcached.sock --rrd-create --rrd-flush
//
// Two times are measured from the first byte sent. "accepted": every point
// was taken by the target (Graphite: the server read to the end of every
// connection and closed it; falcon: every POST answered with its items
// accepted; rrdcached: every BATCH answered). "stored": the wait condition
// chosen by flags held (a /metrics counter reached the point count, every
// whisper file holds its last point, or rrdcached wrote every update after
// FLUSHALL); without one, stored is accepted.
//
// "loadgen summary" reads such JSON lines on stdin and prints a Markdown
// table of each target's median rates and the ratios of transfer to the
// others.
//
// Exit status: 0 when every point was accepted and stored, 1 otherwise, 2
// for bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/transfer/storage"
)

// config is everything the flags set.
type config struct {
	Target       string
	Mode         string
	Addr         string
	Workload     Workload
	Conns        int
	Batch        int
	MetricsURL   string
	StoredMetric string
	WhisperDir   string
	RRDCreate    bool
	RRDFlush     bool
	RRDLayout    string
	Timeout      time.Duration
	Poll         time.Duration
}

// report is the JSON line printed at the end. Seconds and PointsPerSec are
// the "stored" figures, the ones to compare across targets.
type report struct {
	Target                string  `json:"target,omitempty"`
	Mode                  string  `json:"mode"`
	Series                int     `json:"series"`
	Points                int64   `json:"points"`
	Conns                 int     `json:"conns"`
	Batch                 int     `json:"batch"`
	Accepted              int64   `json:"accepted"`
	AcceptedSeconds       float64 `json:"accepted_seconds"`
	AcceptedPointsPerSec  float64 `json:"accepted_points_per_sec"`
	StoredBy              string  `json:"stored_by"`
	Seconds               float64 `json:"seconds"`
	PointsPerSec          float64 `json:"points_per_sec"`
	Load1                 float64 `json:"load1"`
	CarbonReceived        int64   `json:"carbon_received,omitempty"`
	CarbonReceivedSeconds float64 `json:"carbon_received_seconds,omitempty"`
	Error                 string  `json:"error,omitempty"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "summary" {
		os.Exit(runSummary(os.Stdin, os.Stdout, os.Stderr))
	}
	cfg, err := parseFlags(os.Args[1:], time.Now())
	if errors.Is(err, pflag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg)
	if err != nil {
		rep.Error = err.Error()
	}
	line, _ := json.Marshal(rep)
	fmt.Println(string(line))
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, now time.Time) (config, error) {
	fs := pflag.NewFlagSet("loadgen", pflag.ContinueOnError)
	var cfg config
	var start int64
	fs.StringVar(&cfg.Target, "target", "", "name of the target, copied into the report")
	fs.StringVar(&cfg.Mode, "mode", "graphite", "graphite (TCP lines), falcon (HTTP JSON to /api/push) or rrdcached (BATCH of UPDATE)")
	fs.StringVar(&cfg.Addr, "addr", "", "target address: host:port, or unix:PATH for rrdcached")
	fs.IntVar(&cfg.Workload.Series, "series", 10000, "number of series")
	fs.IntVar(&cfg.Workload.Points, "points", 100, "points per series")
	fs.Int64Var(&cfg.Workload.Step, "step", 60, "seconds between two points of a series")
	fs.Int64Var(&start, "start", 0, "Unix time of the first point (default: so that the last point is the latest full step before now)")
	fs.IntVar(&cfg.Conns, "conns", 4, "concurrent connections")
	fs.IntVar(&cfg.Batch, "batch", 1000, "points per write (graphite), per POST (falcon) or per BATCH (rrdcached)")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "Prometheus /metrics URL polled for --stored-metric")
	fs.StringVar(&cfg.StoredMetric, "stored-metric", "", "counter (PromQL selector, summed over matches) that reaches the point count once everything is stored")
	fs.StringVar(&cfg.WhisperDir, "whisper-dir", "", "carbon's whisper data dir: stored once every series' file holds its last point")
	fs.BoolVar(&cfg.RRDCreate, "rrd-create", false, "rrdcached: create every series' file with CREATE before the clock starts")
	fs.BoolVar(&cfg.RRDFlush, "rrd-flush", false, "rrdcached: stored once FLUSHALL has written every update")
	fs.StringVar(&cfg.RRDLayout, "rrd-retentions", storage.DefaultRetentions, "rrdcached: archives of the created files, in Graphite retention notation")
	fs.DurationVar(&cfg.Timeout, "timeout", 15*time.Minute, "give up after this long")
	fs.DurationVar(&cfg.Poll, "poll", 100*time.Millisecond, "interval between two checks of the stored condition")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if start == 0 {
		step := cfg.Workload.Step
		if step <= 0 {
			step = 1
		}
		latest := now.Unix() - now.Unix()%step
		start = latest - int64(cfg.Workload.Points-1)*step
	}
	cfg.Workload.Start = start
	return cfg, cfg.validate()
}

func (cfg config) validate() error {
	if err := cfg.Workload.Validate(); err != nil {
		return err
	}
	if cfg.Addr == "" {
		return errors.New("--addr is required")
	}
	if cfg.Conns <= 0 || cfg.Batch <= 0 {
		return fmt.Errorf("--conns and --batch must be positive")
	}
	if cfg.Timeout <= 0 || cfg.Poll <= 0 {
		return fmt.Errorf("--timeout and --poll must be positive")
	}
	waits := 0
	if cfg.StoredMetric != "" {
		waits++
		if cfg.MetricsURL == "" {
			return errors.New("--stored-metric needs --metrics-url")
		}
		if _, err := parseSelector(cfg.StoredMetric); err != nil {
			return err
		}
	}
	if cfg.WhisperDir != "" {
		waits++
		if cfg.Mode != "graphite" {
			return errors.New("--whisper-dir goes with --mode graphite")
		}
	}
	if cfg.RRDFlush {
		waits++
	}
	if waits > 1 {
		return errors.New("choose one of --stored-metric, --whisper-dir and --rrd-flush")
	}
	switch cfg.Mode {
	case "graphite", "falcon":
		if cfg.RRDCreate || cfg.RRDFlush {
			return errors.New("--rrd-create and --rrd-flush go with --mode rrdcached")
		}
	case "rrdcached":
	default:
		return fmt.Errorf("unknown --mode %q: want graphite, falcon or rrdcached", cfg.Mode)
	}
	return nil
}

// run sets the target up, sends the workload and waits for it to be stored.
func run(ctx context.Context, cfg config) (report, error) {
	w := cfg.Workload
	rep := report{Target: cfg.Target, Mode: cfg.Mode, Series: w.Series, Points: w.Total(), Conns: cfg.Conns, Batch: cfg.Batch, StoredBy: "accepted"}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	httpClient := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: cfg.Conns,
		MaxConnsPerHost:     cfg.Conns,
		DisableCompression:  true,
	}}

	// Setup, before the clock: files, baselines and every byte to send.
	if cfg.Mode == "rrdcached" {
		if err := waitRRDCachedUp(ctx, cfg.Addr, 10*time.Second); err != nil {
			return rep, err
		}
	}
	if cfg.RRDCreate {
		if err := createRRDFiles(ctx, cfg.Addr, w, cfg.RRDLayout, cfg.Conns); err != nil {
			return rep, err
		}
	}
	var sel metricSelector
	var baseline float64
	if cfg.StoredMetric != "" {
		sel, _ = parseSelector(cfg.StoredMetric)
		sum, _, err := scrape(ctx, httpClient, cfg.MetricsURL, sel)
		if err != nil {
			return rep, err
		}
		baseline = sum
	}
	var rrdBaseline int64
	if cfg.RRDFlush {
		c, err := dialRRDCached(ctx, cfg.Addr)
		if err != nil {
			return rep, err
		}
		st, err := c.stats()
		c.Close()
		if err != nil {
			return rep, err
		}
		rrdBaseline = st.DataSetsWritten
	}
	enc, send := sender(cfg, httpClient)
	perConn := make([][]chunk, cfg.Conns)
	for conn := range perConn {
		perConn[conn] = buildChunks(w, conn, cfg.Conns, cfg.Batch, enc)
	}

	rep.Load1 = loadAverage("/proc/loadavg")
	start := time.Now()
	accepted, err := sendAll(ctx, perConn, send)
	rep.Accepted = accepted
	rep.AcceptedSeconds, rep.AcceptedPointsPerSec = rate(w.Total(), time.Since(start))
	rep.Seconds, rep.PointsPerSec = rep.AcceptedSeconds, rep.AcceptedPointsPerSec
	if err != nil {
		return rep, err
	}
	if cfg.Mode != "graphite" && accepted != w.Total() {
		return rep, fmt.Errorf("%d of %d points accepted", accepted, w.Total())
	}

	switch {
	case cfg.StoredMetric != "":
		rep.StoredBy = "metric " + sel.String()
		err = waitMetric(ctx, httpClient, cfg.MetricsURL, sel, baseline, float64(w.Total()), cfg.Poll)
	case cfg.WhisperDir != "":
		rep.StoredBy = "whisper files"
		err = waitWhisperWritten(ctx, cfg.WhisperDir, w, cfg.Poll)
	case cfg.RRDFlush:
		rep.StoredBy = "rrdcached FLUSHALL"
		err = waitRRDFlushed(ctx, cfg.Addr, rrdBaseline, w.Total(), cfg.Poll)
	}
	rep.Seconds, rep.PointsPerSec = rate(w.Total(), time.Since(start))
	if err != nil {
		return rep, err
	}
	if cfg.WhisperDir != "" {
		count, secs, err := carbonCrossCheck(ctx, cfg.WhisperDir, start, w.Total(), 5*time.Second, cfg.Poll)
		if err != nil {
			return rep, err
		}
		rep.CarbonReceived, rep.CarbonReceivedSeconds = count, secs
	}
	return rep, nil
}

// sender picks the wire encoding and the per-connection send function.
func sender(cfg config, client *http.Client) (encoding, func(context.Context, []chunk) (int64, error)) {
	switch cfg.Mode {
	case "falcon":
		url := "http://" + cfg.Addr + "/api/push"
		return falconEncoding, func(ctx context.Context, c []chunk) (int64, error) { return sendFalcon(ctx, client, url, c) }
	case "rrdcached":
		return rrdEncoding, func(ctx context.Context, c []chunk) (int64, error) { return sendRRD(ctx, cfg.Addr, c) }
	default:
		return graphiteEncoding, func(ctx context.Context, c []chunk) (int64, error) { return sendGraphite(ctx, cfg.Addr, c) }
	}
}

// carbonCrossCheck reads carbon's own count of received points, giving its
// instrumentation (written through carbon's cache like any metric) up to
// grace to reach disk. The count is a cross-check, not a gate: a recording
// is lost when two land in the same second, which happens when carbon is
// busy. It returns the count and, by carbon's clock, the seconds from start
// to the recording where the count reached want (or to the last recording).
func carbonCrossCheck(ctx context.Context, dataDir string, start time.Time, want int64, grace, poll time.Duration) (int64, float64, error) {
	deadline := time.Now().Add(grace)
	for {
		got, at, err := carbonReceived(dataDir, start.Unix(), want)
		if err != nil {
			return 0, 0, err
		}
		if got >= want || time.Now().After(deadline) || ctx.Err() != nil {
			secs := 0.0
			if at > 0 {
				secs = round3(float64(at) - float64(start.UnixNano())/1e9)
			}
			return got, secs, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
}

// loadAverage is the one-minute load average at the start of a run, to tell
// a quiet machine from a busy one; 0 when it cannot be read.
func loadAverage(path string) float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), " ")
	v, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return 0
	}
	return v
}

func rate(points int64, d time.Duration) (float64, float64) {
	secs := d.Seconds()
	if secs <= 0 {
		return secs, 0
	}
	return round3(secs), float64(int64(float64(points) / secs))
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// runSummary is the summary subcommand; it returns the exit status.
func runSummary(in io.Reader, out, errOut io.Writer) int {
	reports, err := readReports(in)
	if err != nil {
		fmt.Fprintln(errOut, "loadgen summary:", err)
		return 1
	}
	if err := writeSummary(out, summarize(reports)); err != nil {
		fmt.Fprintln(errOut, "loadgen summary:", err)
		return 1
	}
	return 0
}

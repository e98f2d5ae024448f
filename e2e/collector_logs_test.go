package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/collector/ship"
	"github.com/opskit/opskit/internal/testkit"
)

// logsCollector starts a collector that ships the logs of dir/*.log to
// topic "logs" on brokers, with short timers, and nothing else.
func logsCollector(t *testing.T, dataDir, logDir string, brokers []string, extra ...string) *testkit.Proc {
	t.Helper()
	cfg := filepath.Join(dataDir, "collector.yaml")
	if _, err := os.Stat(cfg); err != nil {
		yaml := fmt.Sprintf("logs:\n  inputs:\n    - name: app\n      paths: [%q]\n      topic: logs\n      fields: {app: shop}\n", filepath.Join(logDir, "*.log"))
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{"--config", cfg, "--hostname", "e2e-host", "--host-metrics=false",
		"--graphite-listen", "", "--statsd-listen", "", "--transfer", "127.0.0.1:1",
		"--kafka-brokers", strings.Join(brokers, ","), "--kafka-linger", "2ms",
		"--logs-poll-interval", "10ms", "--logs-scan-interval", "100ms",
		"--logs-checkpoint-interval", "50ms", "--logs-close-removed-after", "300ms"}, extra...)
	return testkit.Start(t, "collector", testkit.StartOptions{DataDir: dataDir}, args...)
}

// lineWriter appends numbered lines to a log file, rotating it by rename
// every `every` lines, until stopped.
type lineWriter struct {
	dir     string
	every   int
	written atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func startLineWriter(t *testing.T, dir string, every int, pause time.Duration) *lineWriter {
	w := &lineWriter{dir: dir, every: every, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		path := filepath.Join(dir, "app.log")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			panic(err)
		}
		defer func() { f.Close() }()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if i > 0 && i%every == 0 {
				os.Rename(path, fmt.Sprintf("%s.%d", path, i/every))
				f.Close()
				f, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			}
			fmt.Fprintf(f, "%08d GET /api/orders/%d 200 %dms\n", i, i, i%97)
			w.written.Store(int64(i + 1))
			if i%20 == 0 {
				time.Sleep(pause)
			}
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *lineWriter) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// topicReader consumes topic "logs" in the background and counts each
// numbered line.
type topicReader struct {
	mu    sync.Mutex
	seen  map[int]int
	total int
	order map[string]int // last seq per file id
	bad   []string
}

func readTopic(t *testing.T, brokers []string) *topicReader {
	r := &topicReader{seen: map[int]int{}, order: map[string]int{}}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("logs"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(rec *kgo.Record) {
				m, err := ship.Decode(rec.Value)
				r.mu.Lock()
				defer r.mu.Unlock()
				r.total++
				if err != nil {
					r.bad = append(r.bad, err.Error())
					return
				}
				seq, err := strconv.Atoi(strings.Fields(m.Line)[0])
				if err != nil || m.Host != "e2e-host" || m.Fields["app"] != "shop" || string(rec.Key) != m.Path {
					r.bad = append(r.bad, string(rec.Value))
					return
				}
				r.seen[seq]++
				r.order[m.File] = seq
			})
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return r
}

// waitAll waits until lines 0..n-1 have all arrived and returns how many
// records arrived in all.
func (r *topicReader) waitAll(t *testing.T, n int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		got, total, bad := len(r.seen), r.total, r.bad
		r.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("bad records: %v", bad[:min(3, len(bad))])
		}
		if got == n {
			return total
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			var missing []int
			for i := 0; i < n && len(missing) < 10; i++ {
				if r.seen[i] == 0 {
					missing = append(missing, i)
				}
			}
			r.mu.Unlock()
			t.Fatalf("%d of %d lines arrived; first missing %v", got, n, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCollectorLogsToKafkaReadByKcat ships a file with a rotation to
// kfake and reads the topic with kcat (librdkafka), an outside client.
func TestCollectorLogsToKafkaReadByKcat(t *testing.T) {
	kcat := testkit.RequireBinary(t, "kcat", "kcat")
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 3))
	logDir := t.TempDir()
	os.WriteFile(filepath.Join(logDir, "app.log"), []byte("first line\nsecond \"quoted\" line\n"), 0o644)
	co := logsCollector(t, t.TempDir(), logDir, kc.Addrs())
	// Rotation by rename: the old name leaves the glob (*.log).
	time.Sleep(300 * time.Millisecond)
	os.Rename(filepath.Join(logDir, "app.log"), filepath.Join(logDir, "app.log.1"))
	os.WriteFile(filepath.Join(logDir, "app.log"), []byte("after rotation\n"), 0o644)

	var out []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		cmd := exec.Command(kcat, "-C", "-b", strings.Join(kc.Addrs(), ","), "-t", "logs", "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n")
		var err error
		out, err = cmd.Output()
		if err == nil && strings.Count(string(out), "\n") >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kcat read %q (%v); collector log:\n%s", out, err, co.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	lines := map[string]ship.Message{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		key, value, _ := strings.Cut(l, "\t")
		m, err := ship.Decode([]byte(value))
		if err != nil {
			t.Fatalf("kcat printed %q: %v", l, err)
		}
		if key != filepath.Join(logDir, "app.log") || m.Path != key || m.Host != "e2e-host" || m.Fields["app"] != "shop" {
			t.Errorf("record key %q, event %+v", key, m)
		}
		lines[m.Line] = m
	}
	if len(lines) != 3 || lines[`second "quoted" line`].Offset != 11 || lines["after rotation"].Offset != 0 {
		t.Fatalf("events: %+v", lines)
	}
	if lines["first line"].File == lines["after rotation"].File {
		t.Error("the rotated file and the new one share a file id")
	}
	if _, m := get(t, co.URL("/metrics")); !regexp.MustCompile(`opskit_collector_logs_kafka_acked_events_total 3\b`).MatchString(m) {
		t.Errorf("metrics:\n%s", m)
	}
}

// TestCollectorLogsKillNine kills the collector with SIGKILL at random
// moments while lines are written and rotated; after the last restart
// every line is in Kafka, and duplicates stay within what was in flight;
// with one Kafka client and with records spread over two.
func TestCollectorLogsKillNine(t *testing.T) {
	for _, producers := range []string{"1", "2"} {
		t.Run("producers="+producers, func(t *testing.T) { testLogsKillNine(t, "--kafka-producers", producers) })
	}
}

func testLogsKillNine(t *testing.T, extra ...string) {
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 3))
	logDir, dataDir := t.TempDir(), t.TempDir()
	reader := readTopic(t, kc.Addrs())
	co := logsCollector(t, dataDir, logDir, kc.Addrs(), extra...)
	// The writer starts once the collector is up: a file rotated out of
	// the glob before the collector's first scan is never read (building
	// the binary can take longer than a rotation).
	w := startLineWriter(t, logDir, 5000, time.Millisecond)
	const kills = 3
	for range kills {
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		co.Kill()
		co = logsCollector(t, dataDir, logDir, kc.Addrs(), extra...)
	}
	time.Sleep(300 * time.Millisecond)
	w.halt()
	n := int(w.written.Load())
	total := reader.waitAll(t, n, 30*time.Second)
	dups := total - n
	t.Logf("%d lines written across %d kills: %d records, %d duplicates (%.2f%%)", n, kills, total, dups, 100*float64(dups)/float64(n))
	// The in-flight window is what was read and not yet checkpointed when
	// the process died: a checkpoint interval (50ms here) of lines plus
	// what Kafka had not acknowledged. Without checkpoints every restart
	// would read the current file again (up to 5,000 lines).
	if dups > n/5 {
		t.Errorf("%d duplicates for %d lines and %d kills", dups, n, kills)
	}
	if cps, err := os.ReadFile(filepath.Join(dataDir, "logs", "checkpoints.json")); err != nil || !strings.Contains(string(cps), `"offset"`) {
		t.Errorf("checkpoint file: %v %s", err, cps)
	}
}

// TestCollectorLogsBrokerOutage stops the Kafka broker while lines keep
// coming, with a small output buffer: reading pauses, memory stays
// bounded, and every line arrives once the broker is back; with one Kafka
// client for a short outage and, with the default two clients, for the 30
// seconds the issue names (long enough for the clients' request retries and
// reconnection backoff to reach their ceilings).
func TestCollectorLogsBrokerOutage(t *testing.T) {
	for _, tc := range []struct {
		producers string
		outage    time.Duration
	}{{"1", 3 * time.Second}, {"2", 30 * time.Second}} {
		t.Run("producers="+tc.producers, func(t *testing.T) {
			t.Parallel()
			testLogsBrokerOutage(t, tc.outage, "--kafka-producers", tc.producers)
		})
	}
}

func testLogsBrokerOutage(t *testing.T, outage time.Duration, extra ...string) {
	port := logsFreePort(t)
	kafkaDir := t.TempDir()
	startKafka := func() *kfake.Cluster {
		var c *kfake.Cluster
		var err error
		for range 50 { // the port may linger briefly after Close
			c, err = kfake.NewCluster(kfake.Ports(port), kfake.DataDir(kafkaDir), kfake.SeedTopics(3, "logs"))
			if err == nil {
				return c
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
		return nil
	}
	kc := startKafka()
	brokers := []string{fmt.Sprintf("127.0.0.1:%d", port)}
	logDir := t.TempDir()
	w := startLineWriter(t, logDir, 1_000_000, 2*time.Millisecond)
	co := logsCollector(t, t.TempDir(), logDir, brokers, append([]string{"--logs-buffer-bytes", "262144"}, extra...)...)
	time.Sleep(500 * time.Millisecond)
	kc.Close()
	before := w.written.Load()
	var peakRSS float64
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		_, m := get(t, co.URL("/metrics"))
		if v := metricValue(t, m, "process_resident_memory_bytes"); v > peakRSS {
			peakRSS = v
		}
	}
	_, m := get(t, co.URL("/metrics"))
	buffered := metricValue(t, m, "opskit_collector_logs_inflight_events")
	kc = startKafka()
	defer kc.Close()
	time.Sleep(500 * time.Millisecond)
	w.halt()
	n := int(w.written.Load())
	t.Logf("%d lines written during the %v outage; %v events in flight at its end; peak RSS %.1f MiB", n-int(before), outage, buffered, peakRSS/(1<<20))
	if n-int(before) < 500 {
		t.Fatalf("only %d lines written during the outage", n-int(before))
	}
	if peakRSS > 64<<20 {
		t.Errorf("RSS %.1f MiB during the outage", peakRSS/(1<<20))
	}
	reader := readTopic(t, brokers)
	reader.waitAll(t, n, 30*time.Second)
}

func logsFreePort(t *testing.T) int { return testkit.FreePort(t) }

// TestCollectorSinkKillNineAndClickHouseOutage: the collector ships a log
// into Kafka; `collector sink` moves it into ClickHouse, is killed with
// SIGKILL mid-way and restarted, and ClickHouse goes away for a while:
// in the end ClickHouse holds exactly the lines written (repeats collapse
// in the ReplacingMergeTree), and `collector grep` finds them.
func TestCollectorSinkKillNineAndClickHouseOutage(t *testing.T) {
	chs := testkit.ClickHouse(t)
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 3))
	logDir := t.TempDir()
	const n = 30000
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "%08d GET /api/orders/%d %d %dms\n", i, i, []int{200, 200, 200, 500}[i%4], i%97)
	}
	os.WriteFile(filepath.Join(logDir, "app.log"), []byte(sb.String()), 0o644)
	logsCollector(t, t.TempDir(), logDir, kc.Addrs())
	kc.ReadTopic(t, "logs", n, 30*time.Second)

	proxy := testkit.NewCutProxy(t, chs.NativeAddr())
	bin := testkit.Binary(t, "collector")
	startSink := func() (*exec.Cmd, *syncLog) {
		logs := &syncLog{}
		cmd := exec.Command(bin, "sink", "--kafka-brokers", strings.Join(kc.Addrs(), ","), "--topics", "logs",
			"--clickhouse-addr", proxy.Addr(), "--clickhouse-database", chs.Database(),
			"--batch-rows", "2000", "--batch-wait", "20ms", "--session-timeout", "6s")
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, logs
	}
	conn := chs.Conn(t)
	countRows := func(query string) uint64 {
		var c uint64
		if err := conn.QueryRow(context.Background(), query).Scan(&c); err != nil {
			return 0
		}
		return c
	}
	waitRows := func(query string, atLeast uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for countRows(query) < atLeast {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d rows, want %d", query, countRows(query), atLeast)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sink, _ := startSink()
	waitRows("SELECT count() FROM logs", 4000)
	sink.Process.Kill() // mid-way: batches in flight are lost with the process
	sink.Wait()
	time.Sleep(500 * time.Millisecond) // an insert the dead sink had sent may still land
	killedAt := countRows("SELECT count() FROM logs")

	proxy.SetCut(true) // ClickHouse down
	_, sinkLogs := startSink()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sink log:\n%s", sinkLogs.String())
		}
	})
	// The new member gets the partitions once the killed one's session
	// expired, then finds ClickHouse down.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(sinkLogs.String(), "clickhouse insert failed") {
		if time.Now().After(deadline) {
			t.Fatal("the restarted sink never tried to insert")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if c := countRows("SELECT count() FROM logs"); c != killedAt {
		t.Fatalf("rows went from %d to %d while ClickHouse was cut off", killedAt, c)
	}
	proxy.SetCut(false)
	waitRows("SELECT count() FROM logs FINAL", n)
	raw := countRows("SELECT count() FROM logs")
	t.Logf("%d lines; %d rows stored (%d repeated after kill -9 at %d rows), %d after FINAL", n, raw, raw-n, killedAt, countRows("SELECT count() FROM logs FINAL"))
	time.Sleep(200 * time.Millisecond)
	if c := countRows("SELECT count() FROM logs FINAL"); c != n {
		t.Fatalf("%d distinct lines, want %d", c, n)
	}

	out, errOut, code := testkit.Run(t, "collector", "", "grep", "--clickhouse-addr", chs.NativeAddr(), "--clickhouse-database", chs.Database(),
		"--host", "e2e-host", "--since", "1h", "-n", "3", ` 500 `)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[2], "00029999 GET /api/orders/29999 500 26ms") || !strings.Contains(lines[0], " e2e-host "+filepath.Join(logDir, "app.log")+": 00029991 ") {
		t.Fatalf("collector grep: code %d, %q, %s", code, out, errOut)
	}
}

// syncLog is a process's stderr, readable while it is written.
type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestCollectorLogsToFileAndMetrics: --logs-output file writes JSON lines,
// and a log-to-metrics rule reaches transfer as a series per file.
func TestCollectorLogsToFileAndMetrics(t *testing.T) {
	transferAddr := testkit.FreeAddr(t)
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--listen", transferAddr, "--graphite-listen", "")
	dataDir, logDir := t.TempDir(), t.TempDir()
	cfg := filepath.Join(dataDir, "collector.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`logs:
  inputs:
    - name: web
      paths: [%q]
      metrics:
        - {name: errors, pattern: ' 500 '}
        - {name: latency, pattern: '(\d+)ms$', value: "1", aggregate: avg}
`, filepath.Join(logDir, "*.log"))), 0o644)
	out := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(filepath.Join(logDir, "a.log"), []byte("GET / 200 10ms\nGET /x 500 30ms\n"), 0o644)
	testkit.Start(t, "collector", testkit.StartOptions{DataDir: dataDir}, "--config", cfg, "--hostname", "e2e-host",
		"--host-metrics=false", "--graphite-listen", "", "--statsd-listen", "", "--interval", "1s",
		"--transfer", transferAddr, "--transfer-backoff-min", "50ms",
		"--logs-output", "file", "--logs-file", out, "--logs-poll-interval", "10ms")
	series := collectorWaitSeries(t, tr.Addr, `{__name__=~"log.*"}`, 3, 20*time.Second)
	names := map[string]bool{}
	for _, s := range series {
		if s["endpoint"] != "e2e-host" || s["input"] != "web" || s["path"] != filepath.Join(logDir, "a.log") {
			t.Errorf("series %v", s)
		}
		names[s["__name__"]] = true
	}
	if !names["log.errors.count"] || !names["log.latency.count"] || !names["log.latency.avg"] {
		t.Errorf("series %v", names)
	}
	data, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("events file: %q", data)
	}
	if m, err := ship.Decode([]byte(lines[1])); err != nil || m.Line != "GET /x 500 30ms" || m.Offset != 15 {
		t.Errorf("event %+v, %v", m, err)
	}
}

// TestCollectorTailCommand: `collector tail --once` prints the events of
// the files given (globs too) and exits 0; bad usage exits 2.
func TestCollectorTailCommand(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.log"), []byte("first\nsecond \xff\n"), 0o644)
	out, errOut, code := testkit.Run(t, "collector", "", "tail", "--once", "--start-at", "beginning", "--hostname", "h1", filepath.Join(dir, "*.log"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("code %d, stdout %q, stderr %s", code, out, errOut)
	}
	m, err := ship.Decode([]byte(lines[1]))
	if err != nil || m.Line != "second \xff" || m.Offset != 6 || m.Host != "h1" || !strings.Contains(lines[1], `"raw":`) {
		t.Fatalf("event %q: %+v %v", lines[1], m, err)
	}
	if _, _, code := testkit.Run(t, "collector", "", "tail"); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
	if _, _, code := testkit.Run(t, "collector", "", "tail", "--start-at", "middle", "x"); code != 2 {
		t.Errorf("bad --start-at: exit %d, want 2", code)
	}
}

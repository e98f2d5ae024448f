package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/transfer/storage"
)

// rrdClient speaks rrdcached's line protocol over one connection.
type rrdClient struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// dialRRDCached connects to "unix:/path" or "host:port".
func dialRRDCached(ctx context.Context, addr string) (*rrdClient, error) {
	network, address := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", path
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dialing rrdcached at %s: %w", addr, err)
	}
	return &rrdClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 256<<10)}, nil
}

func (c *rrdClient) Close() error { return c.conn.Close() }

// command sends one command and returns the status line's message and the
// lines that follow it. A negative status is an error.
func (c *rrdClient) command(cmd string) (string, []string, error) {
	if _, err := c.w.WriteString(cmd + "\n"); err != nil {
		return "", nil, fmt.Errorf("rrdcached %s: %w", firstWord(cmd), err)
	}
	if err := c.w.Flush(); err != nil {
		return "", nil, fmt.Errorf("rrdcached %s: %w", firstWord(cmd), err)
	}
	status, msg, err := c.readStatus()
	if err != nil {
		return "", nil, fmt.Errorf("rrdcached %s: %w", firstWord(cmd), err)
	}
	if status < 0 {
		return "", nil, fmt.Errorf("rrdcached %s: %s", firstWord(cmd), msg)
	}
	lines := make([]string, 0, status)
	for range status {
		line, err := c.readLine()
		if err != nil {
			return "", nil, fmt.Errorf("rrdcached %s: %w", firstWord(cmd), err)
		}
		lines = append(lines, line)
	}
	return msg, lines, nil
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return w
}

func (c *rrdClient) readLine() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading answer: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (c *rrdClient) readStatus() (int, string, error) {
	line, err := c.readLine()
	if err != nil {
		return 0, "", err
	}
	return parseRRDStatus(line)
}

// parseRRDStatus splits an rrdcached status line "<n> <message>". For
// success n counts the lines that follow; a negative n is an error.
func parseRRDStatus(line string) (int, string, error) {
	num, msg, _ := strings.Cut(line, " ")
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", fmt.Errorf("bad status line %q", truncate(line))
	}
	if n > 1<<20 {
		return 0, "", fmt.Errorf("status line %q announces too many lines", truncate(line))
	}
	return n, msg, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// batch sends a block of newline-terminated commands with BATCH and returns
// how many rrdcached refused, with the first refusal's message.
func (c *rrdClient) batch(commands []byte) (int, string, error) {
	if _, err := c.w.WriteString("BATCH\n"); err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH: %w", err)
	}
	status, msg, err := c.readStatus()
	if err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH: %w", err)
	}
	if status != 0 {
		return 0, "", fmt.Errorf("rrdcached BATCH refused: %s", msg)
	}
	if _, err := c.w.Write(commands); err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH: %w", err)
	}
	if _, err := c.w.WriteString(".\n"); err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH: %w", err)
	}
	errs, _, err := c.readStatus()
	if err != nil {
		return 0, "", fmt.Errorf("rrdcached BATCH result: %w", err)
	}
	first := ""
	for k := range errs {
		line, err := c.readLine()
		if err != nil {
			return 0, "", fmt.Errorf("rrdcached BATCH result: %w", err)
		}
		if k == 0 {
			first = line
		}
	}
	return errs, first, nil
}

// rrdStats is the part of rrdcached's STATS answer the benchmark uses.
type rrdStats struct {
	QueueLength     int64
	UpdatesReceived int64
	DataSetsWritten int64
}

// parseRRDStats reads the "Name: value" lines of a STATS answer. Unknown
// names are ignored; a malformed line is an error.
func parseRRDStats(lines []string) (rrdStats, error) {
	var st rrdStats
	for _, line := range lines {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return rrdStats{}, fmt.Errorf("bad STATS line %q", truncate(line))
		}
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return rrdStats{}, fmt.Errorf("bad STATS line %q: %w", truncate(line), err)
		}
		switch strings.TrimSpace(name) {
		case "QueueLength":
			st.QueueLength = n
		case "UpdatesReceived":
			st.UpdatesReceived = n
		case "DataSetsWritten":
			st.DataSetsWritten = n
		}
	}
	return st, nil
}

func (c *rrdClient) stats() (rrdStats, error) {
	_, lines, err := c.command("STATS")
	if err != nil {
		return rrdStats{}, err
	}
	return parseRRDStats(lines)
}

// rrdCreateArgs is the CREATE argument list matching transfer's default
// storage: one GAUGE data source with a 2 × step heartbeat and, for every
// retention, an AVERAGE, a MAX and a MIN archive with transfer's xff.
func rrdCreateArgs(w Workload, retentions string) (string, error) {
	rs, err := storage.ParseRetentions(retentions)
	if err != nil {
		return "", fmt.Errorf("rrd layout: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-b %d -s %d DS:v:GAUGE:%d:U:U", w.Start-w.Step, w.Step, 2*w.Step)
	for _, r := range rs {
		if r.Step%w.Step != 0 {
			return "", fmt.Errorf("rrd layout: archive step %ds is not a multiple of the workload step %ds", r.Step, w.Step)
		}
		for _, cf := range []string{"AVERAGE", "MAX", "MIN"} {
			fmt.Fprintf(&b, " RRA:%s:%g:%d:%d", cf, storage.DefaultXFF, r.Step/w.Step, r.Rows)
		}
	}
	return b.String(), nil
}

// createRRDFiles creates (or overwrites) every series' file through
// rrdcached's CREATE over conns connections. It is setup, not measured.
func createRRDFiles(ctx context.Context, addr string, w Workload, retentions string, conns int) error {
	args, err := rrdCreateArgs(w, retentions)
	if err != nil {
		return err
	}
	return forEachConn(ctx, conns, func(ctx context.Context, conn int) error {
		c, err := dialRRDCached(ctx, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, i := range ShardSeries(w, conn, conns) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if _, _, err := c.command("CREATE " + RRDFile(i) + " " + args); err != nil {
				return fmt.Errorf("creating %s: %w", RRDFile(i), err)
			}
		}
		return nil
	})
}

// waitRRDFlushed asks rrdcached to write everything it holds (FLUSHALL only
// starts that) and polls STATS until want more data sets than baseline are
// written and the write queue is empty.
func waitRRDFlushed(ctx context.Context, addr string, baseline, want int64, poll time.Duration) error {
	c, err := dialRRDCached(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, _, err := c.command("FLUSHALL"); err != nil {
		return err
	}
	for {
		st, err := c.stats()
		if err != nil {
			return err
		}
		if st.DataSetsWritten-baseline >= want && st.QueueLength == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for rrdcached to write %d data sets (written %d, queue %d): %w",
				want, st.DataSetsWritten-baseline, st.QueueLength, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// waitRRDCachedUp retries connecting for up to wait: rrdcached creates its
// socket file a moment before it accepts connections on it.
func waitRRDCachedUp(ctx context.Context, addr string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		c, err := dialRRDCached(ctx, addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rrdcached not accepting connections: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

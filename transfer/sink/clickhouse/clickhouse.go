// Package clickhouse is transfer's ClickHouse sink: every point a node
// accepts from a client becomes a row of a `samples` table, for long-term
// raw storage beyond the round-robin archives.
//
// The table is created if missing, with classic types only so that it
// works on old servers (18.x) as on current ones:
//
//	CREATE TABLE IF NOT EXISTS samples (
//	    date Date,
//	    timestamp DateTime,
//	    metric String,
//	    series String,               -- name{label="value",...}
//	    label_names Array(String),   -- sorted, without the metric name
//	    label_values Array(String),
//	    value Float64,
//	    step Int32,
//	    counter_type String
//	) ENGINE = MergeTree() PARTITION BY toYYYYMM(date) ORDER BY (metric, series, timestamp)
//
// Rows are inserted in batches (PrepareBatch, explicit column list) through
// a cluster outbox: while ClickHouse is unreachable points wait in the
// spool up to its bound, the oldest beyond it are dropped and counted, and
// inserts resume when it returns. Delivery is at least once.
package clickhouse

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/opskit/opskit/internal/chconn"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/cluster"
)

// Options say where the samples table lives.
type Options struct {
	Addr     string // native protocol HOST:PORT
	Database string // default "default"
	Table    string // default "samples"
	User     string // default "default"
	Password string
	// Timeout bounds one batch insert (default 30s).
	Timeout time.Duration
}

// Sink inserts points into ClickHouse; it is a cluster.Deliverer.
type Sink struct {
	opts Options
	conn driver.Conn

	mu      sync.Mutex
	created bool
}

// New prepares the sink. It does not need ClickHouse to be up: the
// connection is made, and the table created, on the first delivery.
func New(opts Options) (*Sink, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	target := chconn.Target{Addr: opts.Addr, Database: opts.Database, Table: opts.Table,
		User: opts.User, Password: opts.Password, MaxOpenConns: 2}.WithDefaults("samples")
	opts.Database, opts.Table, opts.User = target.Database, target.Table, target.User
	conn, err := chconn.Open(target)
	if err != nil {
		return nil, fmt.Errorf("clickhouse sink: %w", err)
	}
	return &Sink{opts: opts, conn: conn}, nil
}

// DDL is the statement that creates the table.
func (s *Sink) DDL() string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	date Date,
	timestamp DateTime,
	metric String,
	series String,
	label_names Array(String),
	label_values Array(String),
	value Float64,
	step Int32,
	counter_type String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(date) ORDER BY (metric, series, timestamp)`, s.opts.Table)
}

func (s *Sink) ensureTable(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.created {
		return nil
	}
	if err := s.conn.Exec(ctx, s.DDL()); err != nil {
		return fmt.Errorf("clickhouse create table %s: %w", s.opts.Table, err)
	}
	s.created = true
	return nil
}

// Deliver inserts a batch and returns once ClickHouse accepted it.
func (s *Sink) Deliver(ctx context.Context, blocks [][]byte, points int) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if err := s.ensureTable(ctx); err != nil {
		return err
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.opts.Table+
		" (date, timestamp, metric, series, label_names, label_values, value, step, counter_type)")
	if err != nil {
		return fmt.Errorf("clickhouse prepare: %w", err)
	}
	rows := 0
	for _, b := range blocks {
		pts, err := cluster.DecodeBlock(nil, b)
		if err != nil {
			batch.Abort()
			return &cluster.PermanentError{Err: err}
		}
		for _, p := range pts {
			names, values := splitLabels(p.Labels)
			t := time.Unix(p.Time, 0).UTC()
			if err := batch.Append(t, t, p.Labels.Name(), p.Labels.String(), names, values, p.Value, p.Step, p.Type.String()); err != nil {
				batch.Abort()
				return &cluster.PermanentError{Err: fmt.Errorf("clickhouse append: %w", err)}
			}
			rows++
		}
	}
	if rows == 0 {
		batch.Abort()
		return nil
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("clickhouse insert: %w", err)
	}
	return nil
}

func splitLabels(ls metric.Labels) (names, values []string) {
	names = make([]string, 0, len(ls))
	values = make([]string, 0, len(ls))
	for _, l := range ls {
		if l.Name == metric.NameLabel {
			continue
		}
		names = append(names, l.Name)
		values = append(values, l.Value)
	}
	return names, values
}

// Close closes the connection.
func (s *Sink) Close() error { return s.conn.Close() }

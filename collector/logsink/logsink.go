// Package logsink moves log events from Kafka into ClickHouse (`collector
// sink`) and searches them (`collector grep`).
//
// The sink is a Kafka consumer group member. It polls up to a batch of
// records, inserts them into the logs table in one native-protocol batch
// (PrepareBatch, explicit column list, classic column types, so that it
// works with ClickHouse 18.16 as with current releases), and commits the
// Kafka offsets only once ClickHouse has accepted the batch. While
// ClickHouse is down the batch is retried with backoff, nothing is
// committed and nothing more is polled: consumption pauses and resumes by
// itself. A crash or restart repeats at most the batch in progress.
//
// Repeats are harmless to searches: the table is a ReplacingMergeTree
// whose sorting key (host, file, file_offset) names each line uniquely
// (file is the collector's id of one file's life, file_offset the line's
// byte offset in it), so merges keep one row per line, and `collector grep`
// reads with FINAL.
//
//	CREATE TABLE IF NOT EXISTS logs (
//	    date Date, time DateTime, host String, path String, file String,
//	    file_offset UInt64, line String, truncated UInt8,
//	    field_keys Array(String), field_values Array(String)
//	) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(date)
//	  ORDER BY (host, file, file_offset)
package logsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/collector/ship"
	"github.com/opskit/opskit/internal/chconn"
)

// ClickHouse is where the logs table lives.
type ClickHouse struct {
	Addr     string
	Database string
	User     string
	Password string
	Table    string
}

// Config configures a Sink.
type Config struct {
	Brokers []string
	Topics  []string
	Group   string
	ClickHouse
	// BatchRows bounds one insert (default 50,000); BatchWait is how long
	// a batch may wait to fill (default 1s).
	BatchRows int
	BatchWait time.Duration
	// BackoffMin and BackoffMax bound the wait between failed inserts.
	BackoffMin, BackoffMax time.Duration
	// SessionTimeout is the consumer group session timeout (default 45s):
	// how long the partitions of a member that died wait for it.
	SessionTimeout time.Duration
}

// Open connects to ClickHouse (lazily: the first query dials).
func Open(c ClickHouse) (driver.Conn, error) {
	target := chconn.Target{Addr: c.Addr, Database: c.Database, Table: c.Table,
		User: c.User, Password: c.Password, MaxOpenConns: 2}
	if target.Database == "" {
		target.Database = "default"
	}
	return chconn.Open(target)
}

// DDL is the statement that creates the logs table.
func DDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
	date Date,
	time DateTime,
	host String,
	path String,
	file String,
	file_offset UInt64,
	line String,
	truncated UInt8,
	field_keys Array(String),
	field_values Array(String)
) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(date) ORDER BY (host, file, file_offset)`
}

// Sink is one consumer group member writing to ClickHouse.
type Sink struct {
	cfg  Config
	conn driver.Conn
	log  *slog.Logger

	inserted, invalid, failures, batches *metrics.Counter
	created                              bool
}

// New returns a sink; Run starts it.
func New(cfg Config, set *metrics.Set, log *slog.Logger) (*Sink, error) {
	if len(cfg.Brokers) == 0 || len(cfg.Topics) == 0 {
		return nil, errors.New("sink: need Kafka brokers and topics")
	}
	if cfg.Group == "" {
		cfg.Group = "opskit-logsink"
	}
	if cfg.Table == "" {
		cfg.Table = "logs"
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 50000
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 45 * time.Second
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 200 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(10*time.Second, cfg.BackoffMin)
	}
	conn, err := Open(cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	if set == nil {
		set = metrics.NewSet()
	}
	return &Sink{cfg: cfg, conn: conn, log: log,
		inserted: set.GetOrCreateCounter("opskit_collector_sink_inserted_rows_total"),
		invalid:  set.GetOrCreateCounter("opskit_collector_sink_invalid_records_total"),
		failures: set.GetOrCreateCounter("opskit_collector_sink_failed_inserts_total"),
		batches:  set.GetOrCreateCounter("opskit_collector_sink_batches_total"),
	}, nil
}

// Inserted returns the rows inserted so far.
func (s *Sink) Inserted() uint64 { return s.inserted.Get() }

// Run consumes until ctx ends. Offsets of a batch are committed only after
// its insert succeeded; a batch cut short by ctx is left uncommitted.
//
// One batch is inserted while the next is polled and decoded, so the
// decoding (the sink's own CPU) overlaps ClickHouse's work instead of
// following it. At most two batches are held; the next insert waits for
// the previous one's insert and commit, so offsets are committed in order
// and a crash still repeats at most the batch that was being inserted.
// Rebalances are let through only between batches with nothing in flight,
// at least every rebalanceEvery.
func (s *Sink) Run(ctx context.Context) error {
	defer s.conn.Close()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxBytes(64<<20),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
	)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	defer cl.Close()
	var inFlight chan error // the previous batch's insert and commit
	finish := func() error {
		if inFlight == nil {
			return nil
		}
		err := <-inFlight
		inFlight = nil
		return err
	}
	lastAllowed := time.Now()
	for ctx.Err() == nil {
		recs := s.poll(ctx, cl)
		var rows *columns
		if len(recs) > 0 {
			rows = s.decode(recs)
		}
		if err := finish(); err != nil {
			cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(recs) == 0 || time.Since(lastAllowed) >= rebalanceEvery {
			// Nothing is in flight: a rebalance now loses nothing. The
			// batch just polled, if any, is delivered by whoever owns
			// its partitions next (this member again, or another from
			// the last committed offset).
			if len(recs) > 0 {
				if err := s.deliver(ctx, rows); err != nil {
					cl.AllowRebalance()
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				s.commit(ctx, cl, recs)
			}
			cl.AllowRebalance()
			lastAllowed = time.Now()
			continue
		}
		inFlight = make(chan error, 1)
		go func() {
			err := s.deliver(ctx, rows)
			if err == nil {
				s.commit(ctx, cl, recs)
			}
			inFlight <- err
		}()
	}
	if err := finish(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// rebalanceEvery bounds how long a busy sink holds off a rebalance of its
// consumer group.
const rebalanceEvery = time.Second

// commit commits the offsets of records whose rows ClickHouse accepted.
func (s *Sink) commit(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) {
	if err := cl.CommitRecords(ctx, recs...); err != nil && ctx.Err() == nil {
		// The rows are in; a later commit covers them, or a restart
		// repeats them harmlessly.
		s.log.Warn("kafka offset commit failed", "err", err)
	}
}

// poll gathers up to BatchRows records, waiting at most BatchWait once the
// first arrived, and returns empty after rebalanceEvery without one (so a
// rebalance held off by the previous poll is let through while idle).
func (s *Sink) poll(ctx context.Context, cl *kgo.Client) []*kgo.Record {
	var recs []*kgo.Record
	deadline := time.Now().Add(rebalanceEvery)
	for len(recs) < s.cfg.BatchRows {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := cl.PollRecords(pctx, s.cfg.BatchRows-len(recs))
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.log.Warn("kafka fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		first := len(recs) == 0
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		if first && len(recs) > 0 {
			deadline = time.Now().Add(s.cfg.BatchWait)
		}
	}
	return recs
}

// columns are a batch of decoded events, column by column (the native
// protocol's own shape: whole columns append without per-value
// reflection).
type columns struct {
	date, time       []time.Time
	host, path, file []string
	offset           []uint64
	line             []string
	truncated        []uint8
	keys, vals       [][]string
}

func (c *columns) len() int { return len(c.line) }

func (s *Sink) decode(recs []*kgo.Record) *columns {
	c := &columns{}
	in := ship.Interner{}
	for _, r := range recs {
		m, err := ship.DecodeRecord(r, in)
		if err != nil {
			s.invalid.Inc()
			s.log.Debug("record is not a log event; skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		c.add(m)
	}
	return c
}

func (c *columns) add(m ship.Message) {
	keys := make([]string, 0, len(m.Fields))
	for k := range m.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = m.Fields[k]
	}
	var trunc uint8
	if m.Truncated {
		trunc = 1
	}
	t := m.Time.UTC()
	c.date = append(c.date, t)
	c.time = append(c.time, t)
	c.host = append(c.host, m.Host)
	c.path = append(c.path, m.Path)
	c.file = append(c.file, m.File)
	c.offset = append(c.offset, uint64(max(m.Offset, 0)))
	c.line = append(c.line, m.Line)
	c.truncated = append(c.truncated, trunc)
	c.keys = append(c.keys, keys)
	c.vals = append(c.vals, vals)
}

// deliver inserts the batch, retrying with backoff until it succeeds or
// ctx ends.
func (s *Sink) deliver(ctx context.Context, rows *columns) error {
	if rows.len() == 0 {
		return nil
	}
	backoff := time.Duration(0)
	for {
		err := s.insert(ctx, rows)
		if err == nil {
			s.inserted.Add(rows.len())
			s.batches.Inc()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.failures.Inc()
		backoff = min(max(backoff*2, s.cfg.BackoffMin), s.cfg.BackoffMax)
		backoff -= time.Duration(rand.Int64N(int64(backoff)/5 + 1))
		s.log.Warn("clickhouse insert failed; consumption paused, retrying", "rows", rows.len(), "retry_in", backoff.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func (s *Sink) insert(ctx context.Context, rows *columns) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !s.created {
		if err := s.conn.Exec(ctx, DDL(s.cfg.Table)); err != nil {
			return fmt.Errorf("create table %s: %w", s.cfg.Table, err)
		}
		s.created = true
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Table+
		" (date, time, host, path, file, file_offset, line, truncated, field_keys, field_values)")
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	for i, col := range []any{rows.date, rows.time, rows.host, rows.path, rows.file, rows.offset, rows.line, rows.truncated, rows.keys, rows.vals} {
		if err := batch.Column(i).Append(col); err != nil {
			batch.Abort()
			return fmt.Errorf("append column %d: %w", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

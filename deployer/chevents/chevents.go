// Package chevents copies deployer's events to ClickHouse, for queries
// across deploys and fleets ("which hosts failed health in the last
// week"). The store keeps each event in a shipping log until a batch
// holding it is inserted, so a ClickHouse outage or a deployer restart
// loses none; a batch retried after an insert whose answer was lost can
// appear twice (deploy and seq identify an event).
package chevents

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/deployer/store"
	"github.com/opskit/opskit/internal/chconn"
)

// DefaultTable is the events table's name.
const DefaultTable = "deployer_events"

// Options configure a Shipper.
type Options struct {
	Target chconn.Target
	// Batch is the most events in one insert (default 1000).
	Batch int
	// MaxBackoff caps the wait between failed inserts (default 30s).
	MaxBackoff time.Duration
	Metrics    *metrics.Set
	Log        *slog.Logger
}

// Shipper inserts the store's logged events into ClickHouse.
type Shipper struct {
	st      *store.Store
	conn    driver.Conn
	table   string
	o       Options
	shipped *metrics.Counter
	failed  *metrics.Counter
	created bool
}

func (s *Shipper) createTable(ctx context.Context) error {
	// Classic types only (ClickHouse 18.16 and current releases alike):
	// the time to the second plus its nanoseconds.
	ddl := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	time DateTime,
	nanos UInt32,
	deploy String,
	seq UInt64,
	app String,
	env String,
	kind String,
	host String,
	batch UInt32,
	task_id String,
	version String,
	state String,
	step String,
	detail String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(time) ORDER BY (app, env, time)`, s.table)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.conn.Exec(cctx, ddl); err != nil {
		return fmt.Errorf("clickhouse create table %s: %w", s.table, err)
	}
	s.created = true
	return nil
}

// Open prepares the connection (nothing is dialled yet: ClickHouse being
// down never stops deployer) and makes the store log events for shipping
// from now on; Run creates the table if missing, then ships.
func Open(st *store.Store, o Options) (*Shipper, error) {
	o.Target = o.Target.WithDefaults(DefaultTable)
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	conn, err := chconn.Open(o.Target)
	if err != nil {
		return nil, err
	}
	st.LogEvents()
	return &Shipper{st: st, conn: conn, table: o.Target.Table, o: o,
		shipped: o.Metrics.GetOrCreateCounter("opskit_deployer_clickhouse_events_total"),
		failed:  o.Metrics.GetOrCreateCounter("opskit_deployer_clickhouse_insert_failures_total")}, nil
}

// Close closes the connection.
func (s *Shipper) Close() error { return s.conn.Close() }

// Run ships events until ctx ends.
func (s *Shipper) Run(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		changed := s.st.Changed()
		var evs []store.LoggedEvent
		var err error
		if !s.created {
			err = s.createTable(ctx)
		}
		if err == nil {
			evs, err = s.st.EventLog(s.o.Batch)
		}
		if err == nil && len(evs) > 0 {
			if err = s.insert(ctx, evs); err == nil {
				err = s.st.TrimEventLog(evs[len(evs)-1].Pos)
				s.shipped.Add(len(evs))
			} else {
				s.failed.Inc()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.o.Log.Warn("shipping deploy events to ClickHouse failed; retrying", "err", err, "in", backoff)
			sleep(ctx, backoff)
			backoff = min(2*backoff, s.o.MaxBackoff)
			continue
		}
		backoff = time.Second
		if len(evs) == s.o.Batch {
			continue // more waiting
		}
		select {
		case <-ctx.Done():
		case <-changed:
		}
	}
	return nil
}

func (s *Shipper) insert(ctx context.Context, evs []store.LoggedEvent) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table+
		" (time, nanos, deploy, seq, app, env, kind, host, batch, task_id, version, state, step, detail)")
	if err != nil {
		return fmt.Errorf("clickhouse prepare: %w", err)
	}
	for _, le := range evs {
		e := le.Event
		t := e.Time.UTC()
		if err := batch.Append(t.Truncate(time.Second), uint32(t.Nanosecond()), e.Deploy, uint64(e.Seq), le.App, le.Env,
			e.Kind, e.Host, uint32(e.Batch), e.TaskID, e.Version, e.State, e.Step, e.Detail); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("clickhouse append: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("clickhouse insert: %w", err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

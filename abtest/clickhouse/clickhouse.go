// Package clickhouse stores abtest events in a ClickHouse table (ab_events)
// and computes reports there: ClickHouse aggregates the events per unit and
// only unit-level rows travel back for the statistics. It uses the native
// protocol, explicit column lists and classic types only, so it works with
// ClickHouse 18.16 and current releases alike.
package clickhouse

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/internal/chconn"
)

// Options say where the table lives.
type Options struct {
	Addr     string // native protocol HOST:PORT
	Database string
	Table    string
	User     string
	Password string
}

// Store is a forward.Destination and a report source.
type Store struct {
	conn  driver.Conn
	table string
}

// Open connects and creates the table if it does not exist.
func Open(ctx context.Context, o Options) (*Store, error) {
	target := chconn.Target{Addr: o.Addr, Database: o.Database, Table: o.Table,
		User: o.User, Password: o.Password}.WithDefaults("ab_events")
	o.Database, o.Table, o.User = target.Database, target.Table, target.User
	conn, err := chconn.Open(target)
	if err != nil {
		return nil, err
	}
	// Time to the second in a DateTime (classic type) plus the nanoseconds
	// within it, so the pre-period split is exact.
	ddl := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	experiment String,
	time DateTime,
	nanos UInt32,
	kind String,
	unit String,
	variant String,
	name String,
	value Float64,
	forced UInt8
) ENGINE = MergeTree() PARTITION BY toYYYYMM(time) ORDER BY (experiment, unit, time)`, o.Table)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := conn.Exec(cctx, ddl); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse create table %s: %w", o.Table, err)
	}
	return &Store{conn: conn, table: o.Table}, nil
}

// Deliver inserts a batch of events.
func (s *Store) Deliver(ctx context.Context, evs []events.Event) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table+
		" (experiment, time, nanos, kind, unit, variant, name, value, forced)")
	if err != nil {
		return fmt.Errorf("clickhouse prepare: %w", err)
	}
	for i := range evs {
		e := &evs[i]
		var forced uint8
		if e.Forced {
			forced = 1
		}
		t := e.Time.UTC()
		if err := batch.Append(e.Experiment, t.Truncate(time.Second), uint32(t.Nanosecond()), e.Kind.String(), e.Unit,
			e.Variant, e.Name, e.Value, forced); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("clickhouse append: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("clickhouse insert: %w", err)
	}
	return nil
}

// Report computes experiment's report with the per-unit aggregation done by
// ClickHouse.
func (s *Store) Report(ctx context.Context, experiment string, opt report.Options) (*report.Report, error) {
	b := report.NewBuilder(experiment, opt)
	// An event is in the experiment period when its time is at or after
	// PreEnd, compared in nanoseconds (time and nanos together).
	preEnd := int64(math.MinInt64)
	if !opt.PreEnd.IsZero() {
		preEnd = opt.PreEnd.UnixNano()
	}
	inPeriod := fmt.Sprintf("(toInt64(time) * 1000000000 + nanos >= %d)", preEnd)
	// The first and last variant name of a unit's exposures: they differ
	// for a unit exposed to several variants (cheaper than collecting
	// the set).
	query := fmt.Sprintf(`SELECT
	minIf(variant, kind = 'exposure') AS unit_first_variant,
	maxIf(variant, kind = 'exposure') AS unit_last_variant,
	countIf(kind = 'exposure') AS unit_exposures,
	maxIf(forced, kind = 'exposure') AS unit_forced,
	sumIf(value, kind != 'exposure' AND name = ? AND %[1]s) AS unit_value,
	sumIf(value, kind != 'exposure' AND name = ? AND NOT %[1]s) AS unit_pre,
	countIf(kind = 'conversion' AND name = ? AND %[1]s) AS unit_conversions,
	countIf(kind = 'metric' AND name = ? AND %[1]s) AS unit_metrics,
	count() AS unit_events
FROM %[2]s WHERE experiment = ? GROUP BY unit`, inPeriod, s.table)
	metric := opt.Metric
	if metric == "" {
		metric = "\x00" // matches no event name
	}
	rows, err := s.conn.Query(ctx, query, metric, metric, metric, metric, experiment)
	if err != nil {
		return nil, fmt.Errorf("clickhouse report query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			first, last                  string
			exposures, conv, met, events uint64
			forced                       uint8
			value, pre                   float64
		)
		if err := rows.Scan(&first, &last, &exposures, &forced, &value, &pre, &conv, &met, &events); err != nil {
			return nil, fmt.Errorf("clickhouse report row: %w", err)
		}
		row := report.UnitRow{Forced: forced == 1, Value: value, Pre: pre, Conversions: int(conv), Metrics: int(met), Events: int(events)}
		switch {
		case exposures == 0:
		case first == last:
			row.Variants = []string{first}
		default:
			row.Variants = []string{first, last}
		}
		b.AddUnit(row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse report rows: %w", err)
	}
	return b.Build(), nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.conn.Close() }

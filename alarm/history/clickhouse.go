package history

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/opskit/opskit/internal/chconn"
)

// ClickHouseOptions say where the alert_events table lives.
type ClickHouseOptions struct {
	Addr     string // native protocol HOST:PORT
	Database string
	Table    string
	User     string
	Password string
}

// ClickHouse is a Sink writing events to a ClickHouse table, one row per
// event with the labels as parallel key and value arrays. It uses only
// classic column types and explicit column lists, so it works with old
// (18.x) and current servers alike.
type ClickHouse struct {
	conn  driver.Conn
	table string
}

// OpenClickHouse connects and creates the table if it does not exist.
func OpenClickHouse(ctx context.Context, o ClickHouseOptions) (*ClickHouse, error) {
	target := chconn.Target{Addr: o.Addr, Database: o.Database, Table: o.Table,
		User: o.User, Password: o.Password}.WithDefaults("alert_events")
	o.Database, o.Table, o.User = target.Database, target.Table, target.User
	conn, err := chconn.Open(target)
	if err != nil {
		return nil, err
	}
	ddl := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	time DateTime,
	kind String,
	fingerprint String,
	alertname String,
	label_names Array(String),
	label_values Array(String),
	group_key String,
	receiver String,
	notification String,
	detail String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(time) ORDER BY (time, fingerprint)`, o.Table)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, ddl); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse create table %s: %w", o.Table, err)
	}
	return &ClickHouse{conn: conn, table: o.Table}, nil
}

// Write inserts a batch of events.
func (c *ClickHouse) Write(ctx context.Context, events []Event) error {
	batch, err := c.conn.PrepareBatch(ctx, "INSERT INTO "+c.table+
		" (time, kind, fingerprint, alertname, label_names, label_values, group_key, receiver, notification, detail)")
	if err != nil {
		return fmt.Errorf("clickhouse prepare: %w", err)
	}
	for _, e := range events {
		names := make([]string, 0, len(e.Labels))
		for n := range e.Labels {
			names = append(names, n)
		}
		sort.Strings(names)
		values := make([]string, len(names))
		for i, n := range names {
			values[i] = e.Labels[n]
		}
		if err := batch.Append(e.Time.UTC(), e.Kind, e.Fingerprint, e.Labels["alertname"], names, values,
			e.GroupKey, e.Receiver, e.Notification, e.Detail); err != nil {
			batch.Abort()
			return fmt.Errorf("clickhouse append: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("clickhouse insert: %w", err)
	}
	return nil
}

// Close closes the connection.
func (c *ClickHouse) Close() error { return c.conn.Close() }

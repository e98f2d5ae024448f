// Package chconn opens the ClickHouse connections of opskit's writers
// (transfer's samples sink, collector's log sink, alarm's history, abtest's
// events) the same way: native protocol, named database and table checked
// as plain identifiers, and no client settings but the ones every server
// version takes.
//
// ClickHouse 18.x receives settings as typed binary values that the Go
// client can encode for integers and booleans only; string or float
// settings make every query fail there. So none are set here.
package chconn

import (
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Target names a table on a server.
type Target struct {
	Addr     string // native protocol HOST:PORT
	Database string // default "default"
	Table    string // default: the writer's own
	User     string // default "default"
	Password string
	// MaxOpenConns bounds the pool (default the client's).
	MaxOpenConns int
}

// WithDefaults fills the empty database and user, and the table with table.
func (t Target) WithDefaults(table string) Target {
	if t.Database == "" {
		t.Database = "default"
	}
	if t.Table == "" {
		t.Table = table
	}
	if t.User == "" {
		t.User = "default"
	}
	return t
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// IsIdent reports whether s can be spliced into SQL as a database or table
// name: identifiers cannot be bound as query parameters.
func IsIdent(s string) bool { return identRE.MatchString(s) }

// Validate checks the database and table names.
func (t Target) Validate() error {
	if !IsIdent(t.Database) || !IsIdent(t.Table) {
		return fmt.Errorf("clickhouse database %q or table %q is not a plain identifier", t.Database, t.Table)
	}
	return nil
}

// Open validates t and prepares a connection pool; the first query dials.
func Open(t Target) (driver.Conn, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         []string{t.Addr},
		Auth:         clickhouse.Auth{Database: t.Database, Username: t.User, Password: t.Password},
		DialTimeout:  5 * time.Second,
		MaxOpenConns: t.MaxOpenConns,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", t.Addr, err)
	}
	return conn, nil
}

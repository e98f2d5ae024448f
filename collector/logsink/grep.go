package logsink

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/opskit/opskit/internal/chconn"
)

// Query selects stored log lines.
type Query struct {
	// Pattern is an RE2 regular expression the line must match (ClickHouse
	// match()); empty matches every line.
	Pattern string
	Host    string
	// Path matches the path exactly, or as a LIKE pattern if it holds % or _.
	Path  string
	Since time.Time
	Limit int
}

// Line is one search result.
type Line struct {
	Time time.Time `json:"time"`
	Host string    `json:"host"`
	Path string    `json:"path"`
	Line string    `json:"line"`
}

// Grep returns the newest Limit lines matching q, oldest first (newest
// last, as tail prints them). Lines stored twice (a repeated batch) are
// read once (FINAL).
func Grep(ctx context.Context, conn driver.Conn, table string, q Query) ([]Line, error) {
	if !chconn.IsIdent(table) {
		return nil, fmt.Errorf("table %q is not a plain identifier", table)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var where []string
	var args []any
	if q.Pattern != "" {
		where = append(where, "match(line, ?)")
		args = append(args, q.Pattern)
	}
	if q.Host != "" {
		where = append(where, "host = ?")
		args = append(args, q.Host)
	}
	if q.Path != "" {
		if strings.ContainsAny(q.Path, "%_") {
			where = append(where, "path LIKE ?")
		} else {
			where = append(where, "path = ?")
		}
		args = append(args, q.Path)
	}
	if !q.Since.IsZero() {
		where = append(where, "time >= toDateTime(?)")
		args = append(args, q.Since.Unix())
	}
	query := "SELECT time, host, path, line FROM " + table + " FINAL"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += fmt.Sprintf(" ORDER BY time DESC, file DESC, file_offset DESC LIMIT %d", q.Limit)
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("grep: %w", err)
	}
	defer rows.Close()
	var out []Line
	for rows.Next() {
		var l Line
		if err := rows.Scan(&l.Time, &l.Host, &l.Path, &l.Line); err != nil {
			return nil, fmt.Errorf("grep: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("grep: %w", err)
	}
	slices.Reverse(out)
	return out, nil
}

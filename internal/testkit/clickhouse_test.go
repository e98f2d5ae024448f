package testkit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func TestMain(m *testing.M) { Main(m) }

// logRow is a row of the round-trip table, covering the classic column
// types 18.16 offers.
type logRow struct {
	Time    time.Time
	Host    string
	Level   uint8
	Latency float64
	Offset  int64
	Tags    []string
	TraceID *string
}

func TestClickHouseBatchInsertRoundTrip(t *testing.T) {
	server := SharedClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := server.Conn(t)
	// DDL over the native protocol works on 18.16; only INSERT ... VALUES
	// does not (see TestClickHouseNativeInsertValues).
	err := conn.Exec(ctx, `CREATE TABLE logs (
		time DateTime,
		host String,
		level UInt8,
		latency Float64,
		offset Int64,
		tags Array(String),
		trace_id Nullable(String)
	) ENGINE = MergeTree() ORDER BY (host, time)`)
	if err != nil {
		t.Fatalf("create table: %v", err)
	}

	trace := "abc123"
	base := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	want := []logRow{
		{Time: base, Host: "web-1", Level: 3, Latency: 0.25, Offset: -7, Tags: []string{"a", "b"}, TraceID: &trace},
		{Time: base.Add(time.Second), Host: "web-2", Level: 6, Latency: 1e-3, Offset: 1 << 40, Tags: []string{}, TraceID: nil},
		{Time: base.Add(2 * time.Second), Host: "wéb-3 \"quoted\"\n", Level: 0, Latency: 12345.5, Offset: 0, Tags: []string{"x"}, TraceID: nil},
	}

	batch, err := conn.PrepareBatch(ctx, "INSERT INTO logs (time, host, level, latency, offset, tags, trace_id)")
	if err != nil {
		t.Fatalf("prepare batch: %v", err)
	}
	for _, row := range want {
		if err := batch.Append(row.Time, row.Host, row.Level, row.Latency, row.Offset, row.Tags, row.TraceID); err != nil {
			t.Fatalf("append %+v: %v", row, err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("send batch: %v", err)
	}

	rows, err := conn.Query(ctx, "SELECT time, host, level, latency, offset, tags, trace_id FROM logs ORDER BY time")
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	defer rows.Close()
	var got []logRow
	for rows.Next() {
		var row logRow
		if err := rows.Scan(&row.Time, &row.Host, &row.Level, &row.Latency, &row.Offset, &row.Tags, &row.TraceID); err != nil {
			t.Fatalf("scan: %v", err)
		}
		got = append(got, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if diff := diffLogRow(got[i], want[i]); diff != "" {
			t.Errorf("row %d: %s", i, diff)
		}
	}
}

func diffLogRow(got, want logRow) string {
	var diffs []string
	if !got.Time.Equal(want.Time) {
		diffs = append(diffs, fmt.Sprintf("time %v, want %v", got.Time, want.Time))
	}
	if got.Host != want.Host {
		diffs = append(diffs, fmt.Sprintf("host %q, want %q", got.Host, want.Host))
	}
	if got.Level != want.Level || got.Latency != want.Latency || got.Offset != want.Offset {
		diffs = append(diffs, fmt.Sprintf("level/latency/offset %d/%v/%d, want %d/%v/%d",
			got.Level, got.Latency, got.Offset, want.Level, want.Latency, want.Offset))
	}
	if strings.Join(got.Tags, "\x00") != strings.Join(want.Tags, "\x00") || len(got.Tags) != len(want.Tags) {
		diffs = append(diffs, fmt.Sprintf("tags %q, want %q", got.Tags, want.Tags))
	}
	switch {
	case (got.TraceID == nil) != (want.TraceID == nil):
		diffs = append(diffs, fmt.Sprintf("trace_id nil=%v, want nil=%v", got.TraceID == nil, want.TraceID == nil))
	case got.TraceID != nil && *got.TraceID != *want.TraceID:
		diffs = append(diffs, fmt.Sprintf("trace_id %q, want %q", *got.TraceID, *want.TraceID))
	}
	return strings.Join(diffs, "; ")
}

func TestSharedClickHouseGivesEachTestItsOwnDatabase(t *testing.T) {
	first := SharedClickHouse(t)
	second := SharedClickHouse(t)
	if first.NativeAddr() != second.NativeAddr() {
		t.Fatalf("two servers %s and %s, want one shared", first.NativeAddr(), second.NativeAddr())
	}
	if first.Database() == second.Database() || !strings.HasPrefix(first.Database(), "t_") {
		t.Fatalf("databases %q and %q, want two distinct t_ names", first.Database(), second.Database())
	}
	// The same table name in both databases does not collide, and unqualified
	// names resolve to the test's own database.
	first.Exec(t, "CREATE TABLE events (id UInt32) ENGINE = Memory")
	second.Exec(t, "CREATE TABLE events (id UInt32) ENGINE = Memory")
	first.Exec(t, "INSERT INTO events (id) VALUES (1), (2)")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	if err := second.Conn(t).QueryRow(ctx, "SELECT count() FROM events").Scan(&n); err != nil {
		t.Fatalf("count in second database: %v", err)
	}
	if n != 0 {
		t.Fatalf("second database sees %d rows of the first's table, want 0", n)
	}
	if err := first.Conn(t).QueryRow(ctx, "SELECT count() FROM events").Scan(&n); err != nil {
		t.Fatalf("count in first database: %v", err)
	}
	if n != 2 {
		t.Fatalf("first database has %d rows, want 2", n)
	}
}

func TestSharedClickHouseDropsDatabaseAfterTest(t *testing.T) {
	var database string
	var server *ClickHouseServer
	t.Run("owner", func(t *testing.T) {
		server = SharedClickHouse(t)
		database = server.Database()
	})
	observer := SharedClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	err := observer.Conn(t).QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", database).Scan(&n)
	if err != nil {
		t.Fatalf("look up %s: %v", database, err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", database)
	}
}

func TestClickHouseHTTPInterface(t *testing.T) {
	server := SharedClickHouse(t)
	query := url.Values{"query": {"SELECT 40 + 2"}}
	resp, err := http.Get("http://" + server.HTTPAddr() + "/?" + query.Encode())
	if err != nil {
		t.Fatalf("HTTP query: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read HTTP answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "42" {
		t.Fatalf("HTTP answer %d %q, want 200 \"42\"", resp.StatusCode, body)
	}
}

// TestClickHouseIntSettingsWork pins the compatibility note on openClickHouse:
// int settings reach the server (including an old one) and take effect.
func TestClickHouseIntSettingsWork(t *testing.T) {
	server := SharedClickHouse(t)
	ctx := clickhouse.Context(context.Background(), clickhouse.WithSettings(clickhouse.Settings{"max_block_size": 1234}))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var value string
	err := server.Conn(t).QueryRow(ctx, "SELECT value FROM system.settings WHERE name = 'max_block_size'").Scan(&value)
	if err != nil {
		t.Fatalf("query with an int setting: %v", err)
	}
	if value != "1234" {
		t.Fatalf("max_block_size = %q, want 1234", value)
	}
}

// TestClickHouseOwnServerStopsAndCleansUp runs a dedicated server and checks
// that cleanup ends the process and removes its directory.
func TestClickHouseOwnServerStopsAndCleansUp(t *testing.T) {
	var process *clickhouseProcess
	t.Run("server", func(t *testing.T) {
		server := ClickHouse(t)
		process = server.process
		if server.Database() != "default" {
			t.Errorf("Database() = %q, want default", server.Database())
		}
		server.Exec(t, "CREATE TABLE kv (k String, v UInt64) ENGINE = Memory")
		server.Exec(t, "INSERT INTO kv (k, v) VALUES ('a', 1)")
		if _, err := os.Stat(process.dir); err != nil {
			t.Fatalf("server dir: %v", err)
		}
	})
	if process == nil {
		t.Fatal("no server started")
	}
	select {
	case <-process.exited:
	default:
		t.Fatalf("clickhouse-server %d still running after its test ended", process.pid)
	}
	if err := syscall.Kill(process.pid, 0); err == nil {
		t.Fatalf("process %d still exists", process.pid)
	}
	if _, err := os.Stat(process.dir); !os.IsNotExist(err) {
		t.Fatalf("server dir %s left behind (stat: %v)", process.dir, err)
	}
}

func TestRemoveOrphanedClickHouseDirs(t *testing.T) {
	// A pid that cannot exist: above Linux's pid_max limit of 2^22.
	const deadPID = "4194305"
	tests := []struct {
		name      string
		owner     string
		wantExist bool
	}{
		{name: "dead owner", owner: deadPID, wantExist: false},
		{name: "live owner", owner: strconv.Itoa(os.Getpid()), wantExist: true},
		{name: "no owner file", owner: "", wantExist: true},
		{name: "garbage owner", owner: "not a pid", wantExist: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", clickhouseDirPrefix)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if tt.owner != "" {
				if err := os.WriteFile(filepath.Join(dir, clickhouseOwnerFile), []byte(tt.owner), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			removeOrphanedClickHouseDirs()
			_, err = os.Stat(dir)
			if exists := err == nil; exists != tt.wantExist {
				t.Fatalf("dir exists = %v, want %v", exists, tt.wantExist)
			}
		})
	}
}

func TestSharedClickHouseNeedsMain(t *testing.T) {
	requireClickHouse(t)
	sharedClickHouse.mu.Lock()
	sharedClickHouse.mainRuns = false
	sharedClickHouse.mu.Unlock()
	t.Cleanup(func() {
		sharedClickHouse.mu.Lock()
		sharedClickHouse.mainRuns = true
		sharedClickHouse.mu.Unlock()
	})

	rec := runRecorded(t, func(tb testing.TB) { SharedClickHouse(tb) })
	if !rec.failed || !strings.Contains(rec.message, "testkit.Main(m)") {
		t.Fatalf("failed=%v message %q, want a failure that names testkit.Main(m)", rec.failed, rec.message)
	}
}

func TestClickHouseLogTail(t *testing.T) {
	server := SharedClickHouse(t)
	tail := server.LogTail()
	if !strings.Contains(tail, "==> server.log <==") || !strings.Contains(tail, "<Information>") {
		t.Fatalf("log tail lacks the server log:\n%s", tail)
	}
	if lines := strings.Count(tail, "\n"); lines > 2*(clickhouseLogTailLines+1) {
		t.Fatalf("log tail has %d lines, want at most %d", lines, 2*(clickhouseLogTailLines+1))
	}
}

// TestClickHouseStringSettings pins the other half of openClickHouse's
// compatibility note: servers older than revision 54429 (such as 18.16)
// cannot receive string settings from clickhouse-go; newer ones can.
func TestClickHouseStringSettings(t *testing.T) {
	server := SharedClickHouse(t)
	conn := server.Conn(t)
	version, err := conn.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	ctx := clickhouse.Context(context.Background(),
		clickhouse.WithSettings(clickhouse.Settings{"count_distinct_implementation": "uniqExact"}))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var one uint8
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)

	const settingsAsStrings = 54429
	if version.Revision < settingsAsStrings {
		if err == nil || !strings.Contains(err.Error(), "unsupported data type") {
			t.Fatalf("revision %d: string setting gave %v, want the unsupported data type error", version.Revision, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("revision %d: string setting: %v", version.Revision, err)
	}
}

// TestClickHouseNativeInsertValues pins the note on ClickHouseServer.Exec:
// over the native protocol an 18.x server waits for data blocks after
// INSERT ... VALUES, so clickhouse-go's Exec runs into its deadline there;
// newer servers take the inline rows.
func TestClickHouseNativeInsertValues(t *testing.T) {
	server := SharedClickHouse(t)
	server.Exec(t, "CREATE TABLE kv (k String, v UInt64) ENGINE = Memory")
	conn := server.Conn(t)
	version, err := conn.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err = conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ('a', 1)")
	if version.Version.Major < 19 {
		if err == nil {
			t.Fatalf("%s: native INSERT ... VALUES succeeded; update the note on Exec", version)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: native INSERT ... VALUES: %v", version, err)
	}
}

// TestClickHouseCompression checks that the compression codecs opskit's
// writers may enable work against the server (18.16 included).
func TestClickHouseCompression(t *testing.T) {
	server := SharedClickHouse(t)
	server.Exec(t, "CREATE TABLE lines (n UInt32, line String) ENGINE = Memory")
	tests := []struct {
		name   string
		method clickhouse.CompressionMethod
	}{
		{name: "lz4", method: clickhouse.CompressionLZ4},
		{name: "zstd", method: clickhouse.CompressionZSTD},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := clickhouse.Open(&clickhouse.Options{
				Addr:        []string{server.NativeAddr()},
				Auth:        clickhouse.Auth{Database: server.Database(), Username: "default"},
				Compression: &clickhouse.Compression{Method: tt.method},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			batch, err := conn.PrepareBatch(ctx, "INSERT INTO lines (n, line)")
			if err != nil {
				t.Fatalf("prepare batch: %v", err)
			}
			const rows = 1000
			for n := range rows {
				if err := batch.Append(uint32(i*rows+n), strings.Repeat("compressible ", 10)); err != nil {
					t.Fatal(err)
				}
			}
			if err := batch.Send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			var count, sum uint64
			err = conn.QueryRow(ctx, "SELECT count(), sum(n) FROM lines WHERE n >= ? AND n < ?",
				uint32(i*rows), uint32((i+1)*rows)).Scan(&count, &sum)
			if err != nil {
				t.Fatalf("select: %v", err)
			}
			wantSum := uint64(rows*i*rows + rows*(rows-1)/2)
			if count != rows || sum != wantSum {
				t.Fatalf("count %d sum %d, want %d and %d", count, sum, rows, wantSum)
			}
		})
	}
}

// BenchmarkClickHouseBatchInsert measures native batch inserts of 10,000
// narrow rows, a baseline for opskit's ClickHouse writers.
func BenchmarkClickHouseBatchInsert(b *testing.B) {
	server := SharedClickHouse(b)
	server.Exec(b, "CREATE TABLE samples (time DateTime, series String, value Float64) ENGINE = MergeTree() ORDER BY (series, time)")
	conn := server.Conn(b)
	ctx := context.Background()
	const rows = 10000
	now := time.Now().UTC().Truncate(time.Second)
	b.ResetTimer()
	for range b.N {
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO samples (time, series, value)")
		if err != nil {
			b.Fatal(err)
		}
		for n := range rows {
			if err := batch.Append(now, "cpu.idle/host=web-"+strconv.Itoa(n%100), float64(n)); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Send(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
}

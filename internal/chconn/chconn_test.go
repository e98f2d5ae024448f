package chconn

import (
	"context"
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func TestDefaultsAndIdentifiers(t *testing.T) {
	got := Target{Addr: "h:9000"}.WithDefaults("samples")
	if got.Database != "default" || got.User != "default" || got.Table != "samples" {
		t.Fatalf("WithDefaults = %+v", got)
	}
	if kept := (Target{Table: "mine"}).WithDefaults("samples"); kept.Table != "mine" {
		t.Fatalf("a given table was replaced: %+v", kept)
	}
	for _, bad := range []string{"", "a-b", "x; DROP TABLE y", "1abc", "db.table", "`t`"} {
		if IsIdent(bad) {
			t.Errorf("IsIdent(%q) = true", bad)
		}
		if _, err := Open(Target{Addr: "127.0.0.1:1", Database: "default", Table: bad}); err == nil || !strings.Contains(err.Error(), "plain identifier") {
			t.Errorf("Open with table %q: %v", bad, err)
		}
	}
	for _, good := range []string{"samples", "_t1", "alert_events"} {
		if !IsIdent(good) {
			t.Errorf("IsIdent(%q) = false", good)
		}
	}
}

func TestOpenTalksToClickHouse(t *testing.T) {
	srv := testkit.SharedClickHouse(t)
	conn, err := Open(Target{Addr: srv.NativeAddr(), Database: srv.Database(), Table: "t"}.WithDefaults("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var one uint8
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
}

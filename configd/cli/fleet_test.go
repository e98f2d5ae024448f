package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
)

func TestWriteFleetTable(t *testing.T) {
	started := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	daemons := []api.FleetDaemon{
		{DaemonRegistration: api.DaemonRegistration{ID: "127.0.0.1:7120", Kind: "transfer", Host: "web01", Version: "1.4.0", PID: 4242, Started: started},
			State: api.DaemonUp, UptimeSeconds: 3725,
			Stats: &api.DaemonStats{Health: api.HealthOK, HeapBytes: 12.5 * 1024 * 1024, Goroutines: 57,
				Rates: map[string]float64{"points/s": 1520.25, "forwarded/s": 1519}}},
		{DaemonRegistration: api.DaemonRegistration{ID: "127.0.0.1:7130", Kind: "judge", Host: "web01", Version: "1.4.0", PID: 4243},
			State: api.DaemonDown, Stats: nil},
		{DaemonRegistration: api.DaemonRegistration{ID: "127.0.0.1:7140", Kind: "alarm", Host: "web02", Version: "1.4.0", PID: 17},
			State: api.DaemonUp, UptimeSeconds: 5, Stats: &api.DaemonStats{Health: api.HealthNotReady, HeapBytes: 900, Goroutines: 8}},
	}
	var buf bytes.Buffer
	if err := writeFleetTable(&buf, daemons); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ID              KIND      HOST   PID   STATE  UPTIME  VERSION  HEALTH     HEAP     GOROUTINES  RATES",
		"127.0.0.1:7120  transfer  web01  4242  up     1h2m5s  1.4.0    ok         12.5MiB  57          forwarded/s=1519.0 points/s=1520.2",
		"127.0.0.1:7130  judge     web01  4243  down   -       1.4.0    -          -        -           -",
		"127.0.0.1:7140  alarm     web02  17    up     5s      1.4.0    not_ready  900B     8           -",
	}
	got := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	for i := range want {
		if i >= len(got) || strings.TrimRight(got[i], " ") != want[i] {
			t.Fatalf("console:\n%s\nwant:\n%s", buf.String(), strings.Join(want, "\n"))
		}
	}
}

func TestFormatSendResult(t *testing.T) {
	cases := []struct {
		res  api.FleetSendResult
		want string
	}{
		{api.FleetSendResult{ID: "h:1", Kind: "judge", Host: "web01", OK: true, Status: 200, Answer: json.RawMessage("{\n  \"level\": \"debug\"\n}")},
			`h:1 judge web01 ok 200 {"level":"debug"}`},
		{api.FleetSendResult{ID: "h:2", Kind: "alarm", Host: "web01", Status: 404, Error: `unknown admin command "x"`},
			`h:2 alarm web01 error 404 unknown admin command "x"`},
		{api.FleetSendResult{ID: "h:3", Kind: "alarm", Host: "web02", Error: "daemon is down (last heartbeat 2026-03-01T12:00:00Z)"},
			`h:3 alarm web02 error 0 daemon is down (last heartbeat 2026-03-01T12:00:00Z)`},
	}
	for _, c := range cases {
		if got := formatSendResult(c.res); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

// TestFleetCommands runs `configd fleet` against a server with two
// registered daemons, one of which answers admin commands.
func TestFleetCommands(t *testing.T) {
	url := startServer(t)
	levels := map[string]string{}
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/admin/loglevel" {
			http.Error(w, "unknown admin command", http.StatusNotFound)
			return
		}
		r.ParseForm()
		levels[r.Host] = r.Form.Get("arg")
		fmt.Fprintf(w, `{"level":%q}`, r.Form.Get("arg"))
	}))
	defer daemon.Close()
	addr := strings.TrimPrefix(daemon.URL, "http://")
	for _, reg := range []api.DaemonRegistration{
		{ID: addr, Kind: "judge", Host: "web01", Version: "dev", PID: 10, Addr: addr, Started: time.Now()},
		{ID: "127.0.0.1:1", Kind: "alarm", Host: "web02", Version: "dev", PID: 11, Addr: "127.0.0.1:1", Started: time.Now()},
	} {
		body, _ := json.Marshal(reg)
		resp, err := http.Post(url+"/v1/fleet/daemons", "application/json", bytes.NewReader(body))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("register: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	ctx := context.Background()
	steps := []struct {
		args []string
		code int
		want string // substring of stdout, or of stderr when code != 0
	}{
		{[]string{}, 0, "127.0.0.1:1      alarm"},
		{[]string{"list", "--json"}, 0, `"kind":"judge"`},
		{[]string{"send", "--dest", "judge", "loglevel", "debug"}, 0, addr + ` judge web01 ok 200 {"level":"debug"}`},
		{[]string{"send", "--dest", "web02", "loglevel", "debug"}, 1, "1 of 1 daemons failed loglevel"},
		{[]string{"send", "--dest", "nobody", "reload"}, 1, `no registered daemon matches dest "nobody"`},
		{[]string{"send", "reload"}, 2, "give --dest"},
		{[]string{"send", "--dest", "all"}, 2, "give a command"},
		{[]string{"frob"}, 2, `unknown fleet command "frob"`},
		{[]string{"events", "--once"}, 0, `"type":"join","id":"127.0.0.1:1","kind":"alarm"`},
	}
	for _, s := range steps {
		out, errs, code := run(ctx, url, "", "fleet", s.args...)
		text := out
		if s.code != 0 {
			text = errs
		}
		if code != s.code || !strings.Contains(text, s.want) {
			t.Errorf("fleet %v: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", s.args, code, s.code, out, errs, s.want)
		}
	}
	if levels[addr] != "debug" {
		t.Fatalf("daemon levels %v", levels)
	}
}

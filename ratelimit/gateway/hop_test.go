package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
)

func TestUpstreamHopsAndDyedRequestTrace(t *testing.T) {
	b := newBackend(t, "b1")
	cfg, err := Parse("test.yaml", []byte(fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: api, upstream: app}
`, b.addr())))
	if err != nil {
		t.Fatal(err)
	}
	set := metrics.NewSet()
	tr := dye.New(dye.Options{Daemon: "ratelimit"})
	g := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: set, Hops: hop.NewSet(set), Dye: tr})
	if err := g.Load(cfg); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	srv := serveProxy(t, g)

	get(t, srv.URL+"/plain")
	get(t, srv.URL+"/traced", DyeHeader, "req-1") // no rule needed: the header is the dye
	var sb strings.Builder
	set.WritePrometheus(&sb)
	if !strings.Contains(sb.String(), `opskit_hop_items_total{to="`+b.addr()+`"} 2`) {
		t.Fatalf("hop metrics:\n%s", sb.String())
	}
	recs := tr.Trace("req-1")
	if len(recs) != 1 || recs[0].Hop != "proxy "+b.addr() || !strings.Contains(recs[0].Item, "GET /traced -> 200") {
		t.Fatalf("trace = %+v", recs)
	}
}

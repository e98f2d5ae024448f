package cluster

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/transfer/ring"
)

// FuzzServer sends arbitrary bodies to every node-to-node endpoint: each
// answers 200 or a 4xx, never panics, and a bad body stores nothing.
func FuzzServer(f *testing.F) {
	f.Add(uint8(0), AppendFrame(nil, EncodeBlock(testPoints())))
	f.Add(uint8(1), []byte(`{"matchers":[{"type":"=","name":"__name__","value":"cpu.idle"}]}`))
	f.Add(uint8(1), []byte(`{"matchers":[{"type":"=~","name":"a","value":"("}]}`))
	f.Add(uint8(2), []byte(`{"name":"endpoint","matchers":[{"type":"!~","name":"x","value":"y"}]}`))
	f.Add(uint8(3), []byte(`{"ids":[1,2],"cf":"max","start":0,"end":600,"min_step":60}`))
	f.Add(uint8(4), []byte(`{"ids":[1,99]}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		store := newMemStore()
		store.Append(t.Context(), testPoints()[:2])
		c := &Cluster{cfg: Config{Self: "a", Replicas: 1, Metrics: metrics.NewSet()}, local: store}
		c.peers, _ = ring.New([]ring.Node{{Name: "a", Addr: "x:1"}}, 4)
		mux := http.NewServeMux()
		NewServer(c, store).Register(mux)
		paths := []string{PathWrite, PathSelect, PathLabels, PathFetch, PathLast}
		path := paths[int(which)%len(paths)]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set(HeaderWire, WireVersion)
		w := httptest.NewRecorder()
		before := store.count()
		mux.ServeHTTP(w, req)
		if w.Code != http.StatusOK && (w.Code < 400 || w.Code >= 500) {
			t.Fatalf("%s answered %d: %s", path, w.Code, w.Body.String())
		}
		if path == PathWrite && w.Code != http.StatusOK && store.count() != before {
			t.Fatal("a refused write stored points")
		}
	})
}

package query

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
)

// TestGrafanaExamples runs every query of the example dashboard, with the
// host variable expanded as Grafana does, against the API, and checks that
// the data source points at transfer's default address.
func TestGrafanaExamples(t *testing.T) {
	raw, err := os.ReadFile("../../examples/grafana/host-metrics.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	api, _ := newTestAPI(t, Options{})
	h := api.Handler()
	n := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			n++
			expr := strings.ReplaceAll(target.Expr, "$endpoint", "h1|h2")
			code, body := call(t, h, "GET", "/api/v1/query_range", url.Values{
				"query": {expr}, "start": {sec(testNow - 6*3600)}, "end": {sec(testNow)}, "step": {"60"}})
			if code != 200 {
				t.Errorf("panel %q: %s: %d %s", p.Title, expr, code, body)
			}
		}
	}
	if n < 7 {
		t.Errorf("dashboard has %d queries, want one per host metric", n)
	}
	// The variable query: label_values(<selector>, endpoint).
	def := dash.Templating.List[0].Definition
	sel := strings.TrimSuffix(strings.TrimPrefix(def, "label_values("), ", endpoint)")
	code, body := call(t, h, "GET", "/api/v1/label/endpoint/values", url.Values{"match[]": {sel}})
	if code != 200 || body != `{"status":"success","data":["h1","h2"]}` {
		t.Errorf("variable %s: %d %s", def, code, body)
	}

	ds, err := os.ReadFile("../../examples/grafana/datasource.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"type: prometheus", "url: http://127.0.0.1:7120", "uid: opskit-transfer"} {
		if !strings.Contains(string(ds), want) {
			t.Errorf("datasource.yaml lacks %q", want)
		}
	}
}

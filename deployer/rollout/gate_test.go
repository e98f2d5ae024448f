package rollout

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestPromQLGate(t *testing.T) {
	answers := map[string]string{
		"up == 1":      `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}`,
		"errors > 5":   `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		"scalar(1)":    `{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}`,
		"scalar(0)":    `{"status":"success","data":{"resultType":"scalar","result":[1,"0"]}}`,
		"bad(":         `{"status":"error","errorType":"bad_data","error":"parse error"}`,
		"string(\"\")": `{"status":"success","data":{"resultType":"string","result":[1,"x"]}}`,
	}
	var gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		w.Write([]byte(answers[r.URL.Query().Get("query")]))
	}))
	defer srv.Close()
	g := &PromQLGate{Base: srv.URL}
	for _, tc := range []struct {
		query   string
		ok, err bool
	}{
		{"up == 1", true, false},
		{"errors > 5", false, false},
		{"scalar(1)", true, false},
		{"scalar(0)", false, false},
		{"bad(", false, true},
		{"string(\"\")", false, true},
	} {
		ok, detail, err := g.Holds(context.Background(), tc.query)
		if ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%s: ok %v (%s) err %v; want ok %v err %v", tc.query, ok, detail, err, tc.ok, tc.err)
		}
	}
	if gotPath != "/api/v1/query" {
		t.Errorf("path %s", gotPath)
	}
}

func FuzzParseQueryAnswer(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1,"0"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ok, _, err := ParseQueryAnswer(b)
		if err != nil && ok {
			t.Fatal("an unreadable answer held")
		}
	})
}

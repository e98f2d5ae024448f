package history

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opskit/opskit/internal/metric"
)

func TestWindowAndAverage(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		got = append(got, r.URL.Path+" "+q.Get("query")+" "+q.Get("start")+" "+q.Get("end")+" "+q.Get("step")+" "+q.Get("time"))
		switch r.URL.Path {
		case "/api/v1/query_range":
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[910,"1"],[940,"2"],[970,"3"]]}]}}`)
		case "/api/v1/query":
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1000,"4.5"]}]}}`)
		}
	}))
	defer srv.Close()
	c := New(srv.URL, 0)
	ls := metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: "endpoint", Value: "h1"})
	vals, err := c.Window(context.Background(), ls, 1000, 30, 2)
	if err != nil || fmt.Sprint(vals) != "[3 2]" {
		t.Fatalf("Window = %v, %v", vals, err)
	}
	avg, ok, err := c.Average(context.Background(), ls, 900, 1000)
	if err != nil || !ok || avg != 4.5 {
		t.Fatalf("Average = %v %v %v", avg, ok, err)
	}
	want := []string{
		`/api/v1/query_range {__name__="cpu.idle",endpoint="h1"} 939 999 30 `,
		`/api/v1/query avg_over_time({__name__="cpu.idle",endpoint="h1"}[100s])    1000`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queries\n%q\nwant\n%q", got, want)
	}
}

func TestErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(422)
		fmt.Fprint(w, `{"status":"error","errorType":"execution","error":"boom"}`)
	}))
	defer srv.Close()
	if _, _, err := New(srv.URL, 0).Average(context.Background(), nil, 0, 1); err == nil {
		t.Fatal("error answer accepted")
	}
	if _, err := New("127.0.0.1:1", 0).Window(context.Background(), nil, 100, 30, 3); err == nil {
		t.Fatal("unreachable transfer accepted")
	}
}

// FuzzDecodeAnswer: transfer's answers are decoded without panicking, and
// the samples read from them never panic either.
func FuzzDecodeAnswer(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[910,"1"],[940,"x"]]}]}}`))
	f.Add([]byte(`{"status":"success","data":{"result":[{"value":[1,2]}]}}`))
	f.Add([]byte(`{"status":"error","error":"e"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := decodeAnswer(body)
		if err != nil {
			return
		}
		for _, r := range a.Data.Result {
			sampleValue(r.Value[1])
			sampleTime(r.Value[0])
			for _, v := range r.Values {
				sampleValue(v[1])
			}
		}
	})
}

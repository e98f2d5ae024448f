package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeAlarm refuses alerts whose labels are empty, like alarm, and counts
// requests.
func fakeAlarm(t *testing.T, requests *int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*requests++
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &alerts)
		type rej struct {
			Index int    `json:"index"`
			Error string `json:"error"`
		}
		var bad []rej
		for i, a := range alerts {
			if len(a.Labels) == 0 {
				bad = append(bad, rej{i, "at least one label pair required"})
			}
		}
		if len(bad) == 0 {
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": "refused", "accepted": len(alerts) - len(bad), "rejected": bad})
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestSend(t *testing.T) {
	requests := 0
	addr := fakeAlarm(t, &requests)
	in := `{"labels":{"a":"1"}}

[{"labels":{"a":"2"}},{"labels":{}}]
not json
{"labels":{"a":"3"}}
`
	var out, errw bytes.Buffer
	code := Send(context.Background(), []string{"--addr", addr, "--batch", "2"}, strings.NewReader(in), &out, &errw)
	if code != ExitFailure {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errw.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		`{"sent":2,"accepted":2}`,
		`{"sent":0,"accepted":0,"rejected":[{"line":4,"error":"want a JSON object or array"}]}`,
		`{"sent":2,"accepted":1,"rejected":[{"line":3,"error":"at least one label pair required"}]}`,
	}
	if len(lines) != 3 || lines[0] != want[0] || lines[1] != want[1] || lines[2] != want[2] {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
	if requests != 2 {
		t.Fatalf("%d requests", requests)
	}
	out.Reset()
	if code := Send(context.Background(), []string{"--addr", addr}, strings.NewReader(`{"labels":{"a":"1"}}`), &out, &errw); code != ExitOK {
		t.Fatalf("clean input: exit %d %s", code, out.String())
	}
	if code := Send(context.Background(), []string{"extra"}, strings.NewReader(""), &out, &errw); code != ExitUsage {
		t.Fatalf("bad usage: exit %d", code)
	}
	out.Reset()
	if code := Send(context.Background(), []string{"--addr", "127.0.0.1:1"}, strings.NewReader(`{"labels":{"a":"1"}}`), &out, &errw); code != ExitFailure || !strings.Contains(out.String(), `"error"`) {
		t.Fatalf("unreachable: exit %d %s", code, out.String())
	}
}

func TestHistoryUsage(t *testing.T) {
	var out, errw bytes.Buffer
	if code := History(context.Background(), []string{"--match", "=a"}, &out, &errw); code != ExitUsage {
		t.Fatalf("bad matcher: exit %d", code)
	}
	if code := History(context.Background(), []string{"--addr", "127.0.0.1:1"}, &out, &errw); code != ExitFailure {
		t.Fatalf("unreachable: exit %d", code)
	}
}

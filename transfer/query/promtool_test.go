package query

import (
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/testkit"
)

// TestPromtool queries a server over real storage with Debian's promtool,
// an independent Prometheus API client, and checks what it prints.
func TestPromtool(t *testing.T) {
	promtool := testkit.RequireBinary(t, "promtool", "prometheus")
	srv := httptest.NewServer(newStorageAPI(t).Handler())
	defer srv.Close()

	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "instant",
			args: []string{"query", "instant", srv.URL, `{__name__="cpu.idle"}`, "--time=" + sec(testNow)},
			want: "cpu.idle{endpoint=\"h1\"} => 1 @[1699999200]\ncpu.idle{endpoint=\"h2\"} => 20 @[1699999200]\n",
		},
		{
			name: "instant rate",
			args: []string{"query", "instant", srv.URL, `rate(requests_total[5m])`, "--time=" + sec(testNow)},
			want: "{endpoint=\"h1\"} => 0.1 @[1699999200]\n",
		},
		{
			name: "range",
			args: []string{"query", "range", srv.URL, `{__name__="cpu.idle",endpoint="h1"}`,
				"--start=" + sec(testNow-180), "--end=" + sec(testNow), "--step=1m"},
			want: "cpu.idle{endpoint=\"h1\"} =>\n3 @[1699999020]\n4 @[1699999080]\n5 @[1699999140]\n1 @[1699999200]\n",
		},
		{
			name: "range, __cf__ max a day back",
			args: []string{"query", "range", srv.URL, `{__name__="cpu.idle",endpoint="h1",__cf__="max"}`,
				"--start=" + sec(testNow-86400), "--end=" + sec(testNow-86400+300), "--step=5m"},
			want: "cpu.idle{endpoint=\"h1\"} =>\n5 @[1699912800]\n5 @[1699913100]\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(promtool, tt.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
			if string(out) != tt.want {
				t.Errorf("promtool %s:\n got %q\nwant %q", strings.Join(tt.args, " "), out, tt.want)
			}
		})
	}

	t.Run("errors reach the client", func(t *testing.T) {
		out, err := exec.Command(promtool, "query", "instant", srv.URL, `{__name__="cpu.idle",__cf__="last"}`).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "bad_data") || !strings.Contains(string(out), `unknown consolidation function "last"`) {
			t.Errorf("promtool should fail with the bad_data error, got %v:\n%s", err, out)
		}
	})
}

package check

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "strategies.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func item(endpoint, metric string, ts int64, v float64) string {
	return fmt.Sprintf(`{"endpoint":%q,"metric":%q,"timestamp":%d,"step":30,"value":%g}`, endpoint, metric, ts, v)
}

func run(t *testing.T, args []string, in string) (string, string, int) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(in), &out, &errb)
	return out.String(), errb.String(), code
}

func TestCheckPrintsTransitions(t *testing.T) {
	file := writeFile(t, `strategies:
- name: load_high
  metric: load.1min
  condition: avg(#2) > 4
- name: silent
  metric: agent.alive
  nodata: 60s
`)
	var in []string
	for i, v := range []float64{1, 5, 6, 7, 1, 1} {
		ts := int64(1_700_000_000 + 30*i)
		in = append(in, item("h1", "load.1min", ts, v))
		if i < 2 {
			in = append(in, item("h2", "agent.alive", ts, 1))
		}
	}
	out, errs, code := run(t, []string{"--strategies", file}, strings.Join(in, "\n")+"\n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var tr struct {
			Status, Alertname, Duration string
			Value                       float64
			Labels                      map[string]string
		}
		if err := json.Unmarshal([]byte(line), &tr); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, fmt.Sprintf("%s %s %s %g %s", tr.Status, tr.Alertname, tr.Labels["endpoint"], tr.Value, tr.Duration))
	}
	want := "firing load_high h1 5.5 |firing silent h2 0 |resolved load_high h1 4 1m0s"
	if strings.Join(got, "|") != want {
		t.Fatalf("transitions\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
}

func TestCheckRefusesBadLinesAndKeepsGoing(t *testing.T) {
	file := writeFile(t, "strategies:\n- name: up\n  metric: m\n  condition: all(#1) > 0\n")
	in := "{\"metric\":\"m\"}\nnot json\n" + item("h", "m", 1_700_000_000, 1) + "\n"
	out, errs, code := run(t, []string{"--strategies", file}, in)
	if code != 1 || !strings.Contains(errs, "line 1") || !strings.Contains(errs, "line 2") || !strings.Contains(errs, "2 line(s) refused") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if !strings.Contains(out, `"status":"firing"`) {
		t.Fatalf("the valid line was not evaluated: %q", out)
	}
}

func TestCheckUsage(t *testing.T) {
	if _, _, code := run(t, nil, ""); code != 2 {
		t.Fatalf("no --strategies: exit %d", code)
	}
	bad := writeFile(t, "strategies:\n- name: x\n  metric: m\n  condition: all(#3) >\n")
	if _, errs, code := run(t, []string{"--strategies", bad}, ""); code != 1 || !strings.Contains(errs, "strategies[0] (x)") {
		t.Fatalf("bad file: exit %d %q", code, errs)
	}
}

func TestCheckHelpGoesToStdout(t *testing.T) {
	out, _, code := run(t, []string{"--help"}, "")
	if code != 0 || !strings.Contains(out, "--strategies") {
		t.Fatalf("--help: exit %d, stdout %q", code, out)
	}
}

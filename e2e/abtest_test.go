package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

const abtestExperiments = `
layers:
  - name: checkout
experiments:
  - key: button-color
    layer: checkout
    variants:
      - {name: control, weight: 0.5}
      - {name: green, weight: 0.5}
    whitelist: {qa-alice: green}
`

func abtestConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "experiments.yaml")
	if err := os.WriteFile(path, []byte(abtestExperiments), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func abtestPost(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAbtestAssignEventsSurviveKillAndReport assigns 400 units over HTTP,
// posts a conversion for some, kills the daemon with SIGKILL, restarts it
// on the same data directory and checks the report: every acknowledged
// event is there, the whitelisted unit is excluded, the pipe mode agrees
// with the HTTP assignments.
func TestAbtestAssignEventsSurviveKillAndReport(t *testing.T) {
	cfg := abtestConfig(t)
	p := testkit.Start(t, "abtest", testkit.StartOptions{}, "--experiments", cfg)
	assigned := map[string]string{}
	var ids []string
	for i := range 400 {
		id := fmt.Sprint("user-", i)
		ids = append(ids, id)
		code, body := get(t, p.URL("/v1/assign?unit="+id))
		var r struct {
			Assignments []struct{ Experiment, Variant string }
		}
		if code != 200 || json.Unmarshal([]byte(body), &r) != nil || len(r.Assignments) != 1 {
			t.Fatalf("assign %s: %d %s", id, code, body)
		}
		assigned[id] = r.Assignments[0].Variant
		// Repeated assignments log no further exposure.
		get(t, p.URL("/v1/assign?unit="+id))
	}
	if code, body := get(t, p.URL("/v1/assign?unit=qa-alice")); code != 200 || !strings.Contains(body, `"forced":true`) {
		t.Fatalf("whitelisted unit: %s", body)
	}
	var lines []string
	for i, id := range ids {
		if i%4 == 0 {
			lines = append(lines, fmt.Sprintf(`{"type":"conversion","unit":%q,"experiment":"button-color","name":"purchase"}`, id))
		}
	}
	if code, body := abtestPost(t, p.URL("/v1/events"), strings.Join(lines, "\n")); code != 200 || !strings.Contains(body, `"accepted":100`) {
		t.Fatalf("events: %d %s", code, body)
	}
	// Exposures are written in the background: wait until they are on disk
	// by asking for the report, then kill -9.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, p.URL("/v1/report/button-color?format=json"))
		if strings.Contains(body, `"forced": 1`) && strings.Count(body, `"units"`) == 2 && abtestUnits(body) == 400 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exposures not stored: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Kill()
	p = testkit.Start(t, "abtest", testkit.StartOptions{DataDir: p.DataDir}, "--experiments", cfg)
	code, body := get(t, p.URL("/v1/report/button-color?metric=purchase&format=json"))
	if code != 200 {
		t.Fatalf("report after restart: %d %s", code, body)
	}
	var rep struct {
		Kind     string
		Variants []struct {
			Name        string
			Units       int
			Conversions int
		}
		Excluded struct{ Forced int }
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	units, conversions := 0, 0
	for _, v := range rep.Variants {
		units += v.Units
		conversions += v.Conversions
	}
	if rep.Kind != "rate" || units != 400 || conversions != 100 || rep.Excluded.Forced != 1 {
		t.Fatalf("report after kill -9: %s", body)
	}
	// Pipe mode gives the same variants as the HTTP API.
	out, errs, code2 := testkit.Run(t, "abtest", strings.Join(ids[:50], "\n")+"\n", "assign", "--experiments", cfg, "--experiment", "button-color")
	if code2 != 0 {
		t.Fatalf("assign pipe: exit %d %s", code2, errs)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		id, variant, _ := strings.Cut(line, "\t")
		if assigned[id] != variant {
			t.Errorf("pipe says %s -> %s, HTTP said %s", id, variant, assigned[id])
		}
	}
	// The report subcommand reads the same data directory.
	out, errs, code2 = testkit.Run(t, "abtest", "", "report", "--experiment", "button-color", "--metric", "purchase",
		"--experiments", cfg, "--data-dir", p.DataDir)
	if code2 != 0 || !strings.Contains(out, "metric purchase (rate)") || !strings.Contains(out, "1 whitelisted") {
		t.Fatalf("report subcommand: exit %d\n%s\n%s", code2, out, errs)
	}
	out, _, code2 = testkit.Run(t, "abtest", "", "report", "--experiment", "button-color", "--addr", p.Addr, "--format", "json")
	if code2 != 0 || !strings.Contains(out, `"experiment": "button-color"`) {
		t.Fatalf("report --addr: exit %d %s", code2, out)
	}
}

func abtestUnits(reportJSON string) int {
	var rep struct{ Variants []struct{ Units int } }
	_ = json.Unmarshal([]byte(reportJSON), &rep)
	n := 0
	for _, v := range rep.Variants {
		n += v.Units
	}
	return n
}

// TestAbtestHTMLReportInChromium loads /v1/report/E in headless Chromium and
// checks that the page's script drew each variant's estimate and interval.
func TestAbtestHTMLReportInChromium(t *testing.T) {
	chromium := testkit.RequireBinary(t, "chromium", "chromium")
	cfg := abtestConfig(t)
	p := testkit.Start(t, "abtest", testkit.StartOptions{}, "--experiments", cfg)
	var lines []string
	for i := range 60 {
		id := fmt.Sprint("u", i)
		v := []string{"control", "green"}[i%2]
		lines = append(lines,
			fmt.Sprintf(`{"type":"exposure","unit":%q,"experiment":"button-color","variant":%q}`, id, v),
			fmt.Sprintf(`{"type":"metric","unit":%q,"experiment":"button-color","name":"revenue","value":%d}`, id, 10+i%7+2*(i%2)))
	}
	if code, body := abtestPost(t, p.URL("/v1/events"), strings.Join(lines, "\n")); code != 200 {
		t.Fatalf("events: %d %s", code, body)
	}
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--dump-dom", p.URL("/v1/report/button-color?metric=revenue"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	dom := string(out)
	for _, variant := range []string{"control", "green"} {
		if !strings.Contains(dom, `class="estimate" data-variant="`+variant+`"`) || !strings.Contains(dom, `class="interval" data-variant="`+variant+`"`) {
			t.Errorf("the rendered page lacks %s's estimate or interval:\n%s", variant, dom)
		}
	}
	if !strings.Contains(dom, `<svg id="estimates"`) {
		t.Errorf("no chart drawn")
	}
}

// TestAbtestKafkaAndClickHouse runs abtest with Kafka (kfake) and ClickHouse
// configured: accepted events and exposures reach the topic and the table,
// and the report is computed by ClickHouse.
func TestAbtestKafkaAndClickHouse(t *testing.T) {
	ch := testkit.ClickHouse(t)
	kc := testkit.Kafka(t, testkit.KafkaTopic("ab_events", 2))
	cfg := abtestConfig(t)
	p := testkit.Start(t, "abtest", testkit.StartOptions{}, "--experiments", cfg,
		"--kafka-brokers", strings.Join(kc.Addrs(), ","), "--kafka-topic", "ab_events",
		"--clickhouse-addr", ch.NativeAddr(), "--clickhouse-database", ch.Database())
	var lines []string
	for i := range 200 {
		id := fmt.Sprint("k", i)
		if code, body := get(t, p.URL("/v1/assign?unit="+id)); code != 200 {
			t.Fatalf("assign: %d %s", code, body)
		}
		lines = append(lines, fmt.Sprintf(`{"type":"metric","unit":%q,"experiment":"button-color","name":"revenue","value":%d}`, id, 5+i%3))
	}
	if code, body := abtestPost(t, p.URL("/v1/events"), strings.Join(lines, "\n")); code != 200 {
		t.Fatalf("events: %d %s", code, body)
	}
	// 200 exposures and 200 metric events on the topic.
	recs := kc.ReadTopic(t, "ab_events", 400, 20*time.Second)
	kinds := map[string]int{}
	for _, r := range recs {
		var e struct{ Type string }
		_ = json.Unmarshal(r.Value, &e)
		kinds[e.Type]++
	}
	if kinds["exposure"] != 200 || kinds["metric"] != 200 {
		t.Fatalf("topic holds %v", kinds)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := get(t, p.URL("/v1/report/button-color?metric=revenue&format=json"))
		var rep struct {
			Kind     string
			Events   int
			Variants []struct{ Units int }
		}
		_ = json.Unmarshal([]byte(body), &rep)
		if rep.Kind == "mean" && rep.Events == 400 && len(rep.Variants) == 2 && rep.Variants[0].Units+rep.Variants[1].Units == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse report never complete: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var n uint64
	if err := ch.Conn(t).QueryRow(context.Background(), "SELECT count() FROM ab_events WHERE experiment = 'button-color'").Scan(&n); err != nil || n != 400 {
		t.Fatalf("ab_events holds %d rows (%v), want 400", n, err)
	}
}

// TestAbtestRampAdvances gives an experiment a two-step ramp with a short
// hold: with healthy checks it moves from 20 % to full coverage, and units
// assigned at 20 % keep their arm.
func TestAbtestRampAdvances(t *testing.T) {
	path := filepath.Join(t.TempDir(), "experiments.yaml")
	if err := os.WriteFile(path, []byte(`
experiments:
  - key: ramped
    variants: [{name: control}, {name: t}]
    ramp:
      - {coverage: 0.2}
      - {coverage: 1, after: 1s}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testkit.Start(t, "abtest", testkit.StartOptions{}, "--experiments", path, "--ramp-interval", "100ms")
	before := map[string]string{}
	for i := range 200 {
		id := fmt.Sprint("r", i)
		_, body := get(t, p.URL("/v1/assign?unit="+id))
		var r struct{ Assignments []struct{ Variant string } }
		_ = json.Unmarshal([]byte(body), &r)
		if len(r.Assignments) == 1 {
			before[id] = r.Assignments[0].Variant
		}
	}
	if len(before) < 20 || len(before) > 60 {
		t.Fatalf("%d of 200 units in at 20 %% coverage", len(before))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, p.URL("/v1/ramp"))
		if strings.Contains(body, `"coverage":1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ramp did not advance: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 200 {
		id := fmt.Sprint("r", i)
		_, body := get(t, p.URL("/v1/assign?unit="+id))
		var r struct{ Assignments []struct{ Variant string } }
		_ = json.Unmarshal([]byte(body), &r)
		if len(r.Assignments) != 1 {
			t.Fatalf("%s not in the experiment at full coverage: %s", id, body)
		}
		if v, ok := before[id]; ok && v != r.Assignments[0].Variant {
			t.Fatalf("%s moved from %s to %s when the ramp advanced", id, v, r.Assignments[0].Variant)
		}
	}
}

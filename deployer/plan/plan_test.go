package plan

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

func amounts(t *testing.T, ss ...string) []Amount {
	t.Helper()
	var out []Amount
	for _, s := range ss {
		a, err := ParseAmount(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func TestBatches(t *testing.T) {
	for _, tc := range []struct {
		serial []string
		total  int
		want   []int
	}{
		{nil, 5, []int{5}},
		{[]string{"1", "10%", "50%", "100%"}, 50, []int{1, 5, 25, 19}},
		{[]string{"1", "10%", "50%", "100%"}, 3, []int{1, 1, 1}}, // 10% and 50% of 3 round down to 0, then 1
		{[]string{"1", "10%", "50%", "100%"}, 10, []int{1, 1, 5, 3}},
		{[]string{"2"}, 7, []int{2, 2, 2, 1}}, // the last entry repeats
		{[]string{"30%"}, 10, []int{3, 3, 3, 1}},
		{[]string{"33%"}, 10, []int{3, 3, 3, 1}}, // 3.3 rounds down
		{[]string{"1", "5"}, 12, []int{1, 5, 5, 1}},
		{[]string{"100"}, 4, []int{4}},      // never more than the hosts left
		{[]string{"1%"}, 3, []int{1, 1, 1}}, // at least 1
		{[]string{"1"}, 0, nil},
	} {
		got := Batches(amounts(t, tc.serial...), tc.total)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Batches(%v, %d) = %v, want %v", tc.serial, tc.total, got, tc.want)
		}
		sum := 0
		for _, n := range got {
			sum += n
		}
		if sum != max(tc.total, 0) {
			t.Errorf("Batches(%v, %d) covers %d hosts", tc.serial, tc.total, sum)
		}
	}
}

func TestFailedMeansExceeded(t *testing.T) {
	for _, tc := range []struct {
		max            string
		failures, size int
		want           bool
	}{
		{"0", 0, 5, false},
		{"0", 1, 5, true},
		{"1", 1, 5, false}, // reaching the budget is allowed
		{"1", 2, 5, true},
		{"10%", 0, 5, false},
		{"10%", 1, 5, true}, // 10% of 5 is 0.5, rounded down to 0
		{"10%", 2, 20, false},
		{"10%", 3, 20, true},
		{"50%", 2, 4, false},
		{"50%", 3, 4, true},
		{"100%", 4, 4, false},
	} {
		if got := Failed(amounts(t, tc.max)[0], tc.failures, tc.size); got != tc.want {
			t.Errorf("Failed(max %s, %d of %d) = %v, want %v", tc.max, tc.failures, tc.size, got, tc.want)
		}
	}
}

func TestParseApps(t *testing.T) {
	a, err := ParseApps("apps.yaml", []byte(`
default: {max_fail: 1}
apps:
  web:
    batches: [1, "10%", "50%", "100%"]
    pause: until_promote
    max_fail: "10%"
    on_failure: hold
    step_timeout: 1m
    gate: {query: 'up == 1', window: 30s}
  api:
    pause: 5s
`))
	if err != nil {
		t.Fatal(err)
	}
	web := a.For("web")
	if len(web.Batches) != 4 || web.Batches[1] != (Amount{N: 10, Percent: true}) || !web.Pause.UntilPromote ||
		web.OnFailure != OnFailureHold || time.Duration(web.StepTimeout) != time.Minute ||
		time.Duration(web.Gate.Interval) != DefaultGateInterval || time.Duration(web.Gate.Window) != 30*time.Second {
		t.Errorf("web %+v", web)
	}
	if api := a.For("api"); api.Pause.For != 5*time.Second || api.OnFailure != OnFailureRollback ||
		time.Duration(api.BatchTimeout) != DefaultBatchTimeout {
		t.Errorf("api %+v", api)
	}
	if other := a.For("other"); other.MaxFail.N != 1 {
		t.Errorf("default %+v", other)
	}
	for name, text := range map[string]string{
		"unknown key":   "apps: {web: {serial: [1]}}",
		"bad amount":    "apps: {web: {batches: [x]}}",
		"over 100%":     `apps: {web: {batches: ["150%"]}}`,
		"zero batch":    "apps: {web: {batches: [0]}}",
		"bad pause":     "apps: {web: {pause: soon}}",
		"bad failure":   "apps: {web: {on_failure: retry}}",
		"gate no query": "apps: {web: {gate: {window: 1m}}}",
	} {
		if _, err := ParseApps("f", []byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseApps(f *testing.F) {
	f.Add([]byte(`apps: {web: {batches: [1, "10%"], pause: 1s, max_fail: "5%"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseApps("fuzz", data)
		if err != nil {
			return
		}
		for _, s := range a.Apps {
			for total := range 20 {
				sum := 0
				for _, n := range Batches(s.Batches, total) {
					if n < 1 {
						t.Fatalf("empty batch from %v", s.Batches)
					}
					sum += n
				}
				if sum != total {
					t.Fatalf("batches of %v cover %d of %d hosts", s.Batches, sum, total)
				}
			}
		}
	})
}

func TestAmountJSON(t *testing.T) {
	for _, a := range []Amount{{N: 3}, {N: 10, Percent: true}} {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var back Amount
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("%s -> %s -> %v %v", a, b, back, err)
		}
	}
	if b, _ := json.Marshal([]Amount{{N: 1}, {N: 50, Percent: true}}); string(b) != `[1,"50%"]` {
		t.Errorf("batches as JSON: %s", b)
	}
}

package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/store"
)

const cfg = `
experiments:
  - key: e
    variants: [{name: control}, {name: t}]
    whitelist: {qa: t}
  - key: ramped
    variants: [{name: off}, {name: on}]
    ramp: [{coverage: 0}, {coverage: 1, after: 1h}]
`

func TestAssign(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "experiments.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, stdin string
		args        []string
		code        int
		out         string
	}{
		{"ids", "qa\n\nu1\r\n", []string{"--experiments", file, "--experiment", "e"}, 0, "qa\tt\nu1\tt\n"},
		{"ramp first step", "u1\n", []string{"--experiments", file, "--experiment", "ramped", "--data-dir", dir}, 0, "u1\t-\n"},
		{"no experiment flag", "", []string{"--experiments", file}, 2, ""},
		{"unknown experiment", "", []string{"--experiments", file, "--experiment", "x"}, 1, ""},
		{"bad attr", "", []string{"--experiments", file, "--experiment", "e", "--attr", "novalue"}, 2, ""},
		{"missing file", "", []string{"--experiments", filepath.Join(dir, "none"), "--experiment", "e"}, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Assign(context.Background(), tc.args, strings.NewReader(tc.stdin), &out, &errOut)
			if code != tc.code || out.String() != tc.out {
				t.Errorf("exit %d, out %q (stderr %s), want %d %q", code, out.String(), errOut.String(), tc.code, tc.out)
			}
		})
	}
	// With the daemon's ramp state at the last step, everyone is in.
	if err := os.WriteFile(filepath.Join(dir, "ramp.json"), []byte(`{"ramped": {"step": 1}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	Assign(context.Background(), []string{"--experiments", file, "--experiment", "ramped", "--data-dir", dir}, strings.NewReader("u1\n"), &out, &out)
	if out.String() == "u1\t-\n" {
		t.Errorf("ramp state ignored: %q", out.String())
	}
}

func TestReportFromDataDir(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(filepath.Join(dir, "events"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_ = s.Append([]events.Event{
		{Kind: events.Exposure, Unit: "a", Experiment: "e", Variant: "control", Time: now},
		{Kind: events.Exposure, Unit: "b", Experiment: "e", Variant: "t", Time: now},
		{Kind: events.Conversion, Unit: "b", Experiment: "e", Name: "buy", Value: 1, Time: now},
	})
	s.Close()
	for _, format := range []string{"table", "json", "html"} {
		var out, errOut bytes.Buffer
		code := Report(context.Background(), []string{"--experiment", "e", "--metric", "buy", "--data-dir", dir, "--format", format}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), "buy") {
			t.Errorf("%s: exit %d %s %s", format, code, out.String(), errOut.String())
		}
	}
	var out bytes.Buffer
	if code := Report(context.Background(), []string{"--experiment", "e", "--format", "pdf"}, &out, &out); code != 2 {
		t.Errorf("bad format: exit %d", code)
	}
	if code := Report(context.Background(), []string{"--experiment", "e", "--addr", "127.0.0.1:1"}, &out, &out); code != 1 {
		t.Errorf("unreachable daemon: exit %d", code)
	}
}

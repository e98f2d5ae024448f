package diag

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAllowlist(t *testing.T) {
	var audit bytes.Buffer
	a, err := New([]Command{
		{Name: "echo", Command: []string{"echo", "hello"}, Args: []string{`[a-z]+`}},
		{Name: "slow", Command: []string{"sleep", "5"}, Timeout: 100 * time.Millisecond},
		{Name: "chatty", Command: []string{"sh", "-c", "yes | head -c 100000"}, MaxOutput: 1000},
	}, &audit)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		out     string
		errText string
		allowed bool
	}{
		{"echo", []string{"world"}, "hello world\n", "", true},
		{"echo", nil, "hello\n", "", true},
		{"echo", []string{"world; rm -rf /"}, "", "does not match", false},
		{"echo", []string{"a", "b"}, "", "at most 1", false},
		{"rm", nil, "", "no diagnostic command", false},
		{"slow", nil, "", "timed out", true},
		{"chatty", nil, strings.Repeat("y\n", 500), "output cut at 1000", true},
	}
	for _, c := range cases {
		var out bytes.Buffer
		began := time.Now()
		_, err := a.Run(context.Background(), "test", c.name, c.args, &out)
		if c.errText == "" && err != nil || c.errText != "" && (err == nil || !strings.Contains(err.Error(), c.errText)) {
			t.Errorf("%s %v: err = %v, want %q", c.name, c.args, err, c.errText)
		}
		if !c.allowed && !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s %v: err %v is not ErrNotAllowed", c.name, c.args, err)
		}
		if out.String() != c.out {
			t.Errorf("%s %v: output %q, want %q", c.name, c.args, out.String(), c.out)
		}
		if time.Since(began) > 3*time.Second {
			t.Errorf("%s ran %s", c.name, time.Since(began))
		}
	}
	lines := strings.Split(strings.TrimSpace(audit.String()), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("%d audit lines for %d runs", len(lines), len(cases))
	}
	var rec AuditRecord
	json.Unmarshal([]byte(lines[2]), &rec)
	if rec.Caller != "test" || rec.Error == "" || rec.Name != "echo" {
		t.Errorf("audit of a refused run: %+v", rec)
	}
}

func TestNewRefusesBadEntries(t *testing.T) {
	for _, cmds := range [][]Command{
		{{Name: "", Command: []string{"x"}}},
		{{Name: "a", Command: []string{"x"}}, {Name: "a", Command: []string{"y"}}},
		{{Name: "a", Command: []string{"x"}, Args: []string{"("}}},
	} {
		if _, err := New(cmds, nil); err == nil {
			t.Errorf("%+v accepted", cmds)
		}
	}
}

package cron

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Job is a scheduled command: the diagnostic command Name with Args, run
// through the agents on the hosts of App in Env that Target picks.
type Job struct {
	ID       string   `json:"id"`
	App      string   `json:"app"`
	Env      string   `json:"env,omitempty"`
	Schedule string   `json:"schedule"`
	Target   string   `json:"target"`
	Name     string   `json:"name"`
	Args     []string `json:"args"`
	// Created and CreatedBy are set by the scheduler when the job is added.
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// Run is one run of a job and its per-host results.
type Run struct {
	Job string `json:"job"`
	Seq uint64 `json:"seq"`
	// Trigger is "schedule" or "manual".
	Trigger string `json:"trigger"`
	// Scheduled is the minute the schedule fired for (zero for manual runs).
	Scheduled time.Time    `json:"scheduled,omitzero"`
	Start     time.Time    `json:"start"`
	End       time.Time    `json:"end"`
	Hosts     []HostResult `json:"hosts"`
	// Error is set when the run could not start at all (no hosts, say).
	Error string `json:"error,omitempty"`
}

// OK reports whether every host ran the command with exit status 0.
func (r Run) OK() bool {
	if r.Error != "" {
		return false
	}
	for _, h := range r.Hosts {
		if !h.OK() {
			return false
		}
	}
	return true
}

// HostResult is one host's outcome of a run, with the end of its output.
type HostResult struct {
	Host     string `json:"host"`
	ExitCode int    `json:"exit_code"`
	Refused  bool   `json:"refused,omitempty"`
	Error    string `json:"error,omitempty"`
	// Output is the last OutputKeep bytes of the output; Bytes counts all.
	Output string `json:"output"`
	Bytes  int64  `json:"bytes"`
}

// OK reports whether the host's command exited 0.
func (h HostResult) OK() bool { return h.ExitCode == 0 && h.Error == "" }

// OutputKeep is how much of each host's output a run keeps (its end).
const OutputKeep = 4 << 10

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// Validate checks a job as submitted and returns its parsed schedule.
func (j *Job) Validate() (Schedule, error) {
	if !namePattern.MatchString(j.App) {
		return Schedule{}, fmt.Errorf("app %q: want letters, digits, '.', '_', '+', '-'", j.App)
	}
	if j.Env != "" && !namePattern.MatchString(j.Env) {
		return Schedule{}, fmt.Errorf("env %q: want letters, digits, '.', '_', '+', '-'", j.Env)
	}
	if j.Name == "" {
		return Schedule{}, errors.New("a command name is required")
	}
	if j.Target == "" {
		j.Target = "all"
	}
	if _, err := ParseTarget(j.Target); err != nil {
		return Schedule{}, err
	}
	if j.Args == nil {
		j.Args = []string{}
	}
	return Parse(j.Schedule)
}

// ParseTarget reads a job's target: "all" (every host), "one" (one host,
// a different one each run, in turn) or "batch:N" (N hosts, the next N in
// turn each run). It returns the batch size, 0 for all.
func ParseTarget(s string) (int, error) {
	switch s {
	case "all":
		return 0, nil
	case "one":
		return 1, nil
	}
	if n, ok := strings.CutPrefix(s, "batch:"); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= 1 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("target %q: want all, one or batch:N (N >= 1)", s)
}

// Select picks the hosts of run number seq (1, 2, ...) from hosts (sorted
// by name): all of them, or the batch of size n that comes next in turn,
// so that successive runs cover every host before any runs twice.
func Select(target string, hosts []string, seq uint64) ([]string, error) {
	n, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	if n == 0 || n >= len(hosts) {
		return hosts, nil
	}
	if seq == 0 {
		seq = 1
	}
	start := int(((seq - 1) * uint64(n)) % uint64(len(hosts)))
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, hosts[(start+i)%len(hosts)])
	}
	return out, nil
}

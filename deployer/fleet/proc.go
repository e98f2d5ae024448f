package fleet

import (
	"context"
	"fmt"
	"strings"

	"github.com/opskit/opskit/deployer/hosts"
)

// ProcActions are the program actions an agent takes.
var ProcActions = []string{"start", "stop", "restart"}

// ProcResult is one host's outcome of a program action.
type ProcResult struct {
	Host    string         `json:"host"`
	OK      bool           `json:"ok"`
	Program *ProgramStatus `json:"program,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// ProgramName is the agent's name for an app's program: "APP:PROGRAM".
// A name that already holds a colon is taken as it is.
func ProgramName(app, program string) string {
	if strings.Contains(program, ":") {
		return program
	}
	return app + ":" + program
}

// Proc runs action (start, stop or restart) on program on each of the
// target's hosts concurrently and returns one result per host, in host
// order. The error is for the request as a whole (bad action, no hosts);
// a host's failure is in its result.
func (f *Fleet) Proc(ctx context.Context, t Target, action, program string) ([]ProcResult, error) {
	switch action {
	case "start", "stop", "restart":
	default:
		return nil, fmt.Errorf("%w: action %q: want start, stop or restart", ErrBadRequest, action)
	}
	if program == "" {
		return nil, fmt.Errorf("%w: a program name is required", ErrBadRequest)
	}
	hs, err := f.Resolve(ctx, t)
	if err != nil {
		return nil, err
	}
	name := ProgramName(t.App, program)
	results := make([]ProcResult, len(hs))
	f.eachHost(ctx, hs, func(ctx context.Context, i int, h hosts.Host) {
		st, err := f.Agents.Program(ctx, h.Addr, name, action)
		results[i] = ProcResult{Host: h.Name, OK: err == nil, Program: st, Error: errorText(err)}
	})
	return results, nil
}

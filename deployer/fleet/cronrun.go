package fleet

import (
	"context"
	"errors"

	"github.com/opskit/opskit/deployer/fleet/cron"
	"github.com/opskit/opskit/deployer/hosts"
)

// CronRunner runs cron jobs' commands through the fleet's agents.
type CronRunner struct{ Fleet *Fleet }

// RunJob runs the job's diagnostic command on the hosts its target picks
// for run seq and keeps the end of each host's output.
func (c CronRunner) RunJob(ctx context.Context, j cron.Job, seq uint64) ([]cron.HostResult, error) {
	if err := c.Fleet.CheckAllowed(j.Name); err != nil {
		return nil, err
	}
	all, err := c.Fleet.Resolve(ctx, Target{App: j.App, Env: j.Env})
	if err != nil {
		return nil, err
	}
	names := make([]string, len(all))
	for i, h := range all {
		names[i] = h.Name
	}
	picked, err := cron.Select(j.Target, names, seq)
	if err != nil {
		return nil, err
	}
	var hs []hosts.Host
	for _, h := range all {
		for _, p := range picked {
			if h.Name == p {
				hs = append(hs, h)
			}
		}
	}
	out := make([]cron.HostResult, len(hs))
	c.Fleet.eachHost(ctx, hs, func(ctx context.Context, i int, h hosts.Host) {
		tail := &tailBuffer{keep: cron.OutputKeep}
		code, err := c.Fleet.Agents.Diag(ctx, h.Addr, j.Name, j.Args, tail)
		out[i] = cron.HostResult{Host: h.Name, ExitCode: code, Refused: errors.Is(err, ErrRefused), Error: hostErrorText(err), Output: string(tail.buf), Bytes: tail.total}
	})
	return out, nil
}

// tailBuffer keeps the last keep bytes written to it.
type tailBuffer struct {
	keep  int
	buf   []byte
	total int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.keep; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

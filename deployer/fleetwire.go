package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deployer/api"
	"github.com/opskit/opskit/deployer/fleet"
	"github.com/opskit/opskit/deployer/fleet/cron"
	"github.com/opskit/opskit/deployer/hosts"
	"github.com/opskit/opskit/deployer/store"
	"github.com/opskit/opskit/deployer/web"
	"github.com/opskit/opskit/internal/kit"
)

// fleetConfig wires the fleet work besides releases (deployer/fleet:
// process control, host stats, exec, cron) and the status page.
type fleetConfig struct {
	execAllow   []string
	concurrency int
	callTimeout time.Duration
	keepRuns    int
	runTimeout  time.Duration
	cronZone    string
}

func (f *fleetConfig) flags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.execAllow, "exec-allow", nil, "diagnostic command names deployer passes to the agents for exec and cron (default: any; the agents' allowlists decide)")
	fs.IntVar(&f.concurrency, "fleet-concurrency", 32, "agents called at once by one proc, stats, exec or cron run")
	fs.DurationVar(&f.callTimeout, "agent-call-timeout", time.Minute, "bound on one program action or host stats call to an agent")
	fs.IntVar(&f.keepRuns, "cron-keep-runs", 100, "runs kept per cron job (the oldest are dropped)")
	fs.DurationVar(&f.runTimeout, "cron-run-timeout", 10*time.Minute, "bound on one cron run across its hosts")
	fs.StringVar(&f.cronZone, "cron-timezone", "UTC", "time zone cron schedules are read in (an IANA name such as Europe/Berlin, or Local)")
}

// start serves /v1/proc, /v1/apps/{app}/hosts/stats, /v1/exec, /v1/cron
// and the status page, and runs the cron scheduler (<data-dir>/cron.db).
// agentToken is the agents' --api-token.
func (f *fleetConfig) start(ctx context.Context, d *kit.Daemon, src hosts.Source, st *store.Store, tokens func() *api.Tokens, agentToken string) error {
	fl := &fleet.Fleet{
		Hosts:       src,
		Agents:      &fleet.AgentClient{HTTP: &http.Client{}, Token: agentToken, CallTimeout: f.callTimeout},
		Concurrency: f.concurrency,
		Allow:       f.execAllow,
	}
	loc, err := time.LoadLocation(f.cronZone)
	if err != nil {
		return fmt.Errorf("--cron-timezone: %w", err)
	}
	cronStore, err := cron.OpenStore(filepath.Join(d.DataDir, "cron.db"), f.keepRuns)
	if err != nil {
		return err
	}
	d.OnStop("cron store", func(context.Context) error { return cronStore.Close() })
	sched, err := cron.New(cron.Options{Store: cronStore, Runner: fleet.CronRunner{Fleet: fl}, Log: d.Log.With("part", "cron"),
		Metrics: d.Metrics, RunTimeout: f.runTimeout, Location: loc, Check: func(j cron.Job) error { return fl.CheckAllowed(j.Name) }})
	if err != nil {
		return err
	}
	d.Go(ctx, "cron", sched.Run)
	fleet.Register(d.Mux, fleet.Deps{Fleet: fl, Cron: sched, Authorize: authorizer(tokens), Audit: auditTo(st, d), Log: d.Log})
	web.Register(d.Mux)
	return nil
}

// authorizer checks fleet requests against the tokens file as the deploy
// API does.
func authorizer(tokens func() *api.Tokens) func(r *http.Request, app, role string) (string, error) {
	return func(r *http.Request, app, role string) (string, error) {
		return api.Authorize(tokens, r, app, role)
	}
}

// auditTo records fleet actions in deployer's audit log.
func auditTo(st *store.Store, d *kit.Daemon) func(user, action, app, env, detail string, err error) {
	return func(user, action, app, env, detail string, err error) {
		e := store.AuditEntry{Time: time.Now().UTC(), User: user, Action: action, App: app, Env: env, Detail: detail, Result: "ok"}
		if err != nil {
			e.Result = err.Error()
		}
		if aerr := st.Audit(e); aerr != nil && !errors.Is(aerr, context.Canceled) {
			d.Log.Error("writing the audit log failed", "err", aerr, "action", action)
		}
	}
}

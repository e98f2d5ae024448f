// Command configd is opskit's versioned config server, its per-host agent
// (`configd agent`) and the fleet's naming service, plus a pipe-friendly
// CLI (`configd get|put|publish|...`). See configd/README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/configd/agent"
	"github.com/opskit/opskit/configd/cli"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/configd/server"
	"github.com/opskit/opskit/configd/store"
	"github.com/opskit/opskit/internal/kit"
)

type serverFlags struct {
	watchTimeout       time.Duration
	watchBatch         int
	watchBatchInterval time.Duration
	hostTTL            time.Duration
	memberEvents       int
	maxBodyBytes       int64
	follow             string
	followTokenFile    string
	tokensFile         string
	fleet              server.FleetConfig
	fleetTokenFile     string
}

type agentFlags struct {
	servers           []string
	tokenFile         string
	host              string
	labels            []string
	apps              []string
	namespaces        []string
	cacheDir          string
	advertise         string
	watchTimeout      time.Duration
	heartbeatInterval time.Duration
	staleAfter        time.Duration
	keepReleases      int
	checkTimeout      time.Duration
}

func main() {
	kit.Main(serverSpec("configd"))
}

func serverSpec(name string) kit.Spec {
	var f serverFlags
	return kit.Spec{
		Name:    name,
		Listen:  "127.0.0.1:7160",
		Summary: "versioned config server and the fleet's naming service (`configd agent` runs the host agent)",
		Flags:   f.register,
		Start:   f.start,
		Commands: append([]kit.Command{
			{Name: "server", Summary: "run the config server (the default without a command)", Run: func(ctx context.Context, args []string, io kit.IO) int {
				return kit.Run(ctx, serverSpec("configd"), args, io, os.LookupEnv, nil)
			}},
			{Name: "agent", Summary: "run the host agent: keep namespaces on local disk (default --listen 127.0.0.1:7161)", Run: func(ctx context.Context, args []string, io kit.IO) int {
				return kit.Run(ctx, agentSpec(), args, io, os.LookupEnv, nil)
			}},
		}, cliCommands()...),
	}
}

func cliCommands() []kit.Command {
	var out []kit.Command
	for _, c := range cli.Commands() {
		out = append(out, kit.Command{
			Name:    c.Name,
			Summary: strings.TrimSpace(c.Usage + "  " + c.Summary),
			Run: func(ctx context.Context, args []string, io kit.IO) int {
				return cli.Main(ctx, c.Name, args, io)
			},
		})
	}
	return out
}

func (f *serverFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&f.watchTimeout, "watch-timeout", 60*time.Second, "longest a watch waits before answering 304 Not Modified")
	fs.IntVar(&f.watchBatch, "watch-batch", 1000, "watchers woken at once when a namespace changes")
	fs.DurationVar(&f.watchBatchInterval, "watch-batch-interval", 5*time.Millisecond, "pause between batches of woken watchers")
	fs.DurationVar(&f.hostTTL, "host-ttl", 30*time.Second, "a host missing heartbeats this long is marked down")
	fs.IntVar(&f.memberEvents, "member-events", 10000, "membership events kept for watchers")
	fs.Int64Var(&f.maxBodyBytes, "max-body-bytes", 16<<20, "largest request body (files are sent in bodies)")
	fs.StringVar(&f.follow, "follow", "", "run as a read replica of the primary at this URL (writes are forwarded to it)")
	fs.StringVar(&f.followTokenFile, "follow-token-file", "", "file holding the token sent to the primary when following")
	fs.StringVar(&f.tokensFile, "tokens-file", "", "YAML file of tokens with roles (admin, publisher, reader); without it every caller is admin")
	fs.DurationVar(&f.fleet.TTL, "fleet-ttl", 15*time.Second, "a daemon registered with --configd that misses heartbeats this long (at least 3 of its intervals) is down")
	fs.DurationVar(&f.fleet.ScrapeInterval, "fleet-scrape-interval", 5*time.Second, "how often every registered daemon's /metrics, /healthz and /readyz are read")
	fs.DurationVar(&f.fleet.ScrapeTimeout, "fleet-scrape-timeout", 3*time.Second, "deadline of one daemon's scrape")
	fs.StringVar(&f.fleet.AdminToken, "fleet-admin-token", "", "admin token `fleet send` presents to the daemons' /admin/*; prefer --fleet-admin-token-file")
	fs.StringVar(&f.fleetTokenFile, "fleet-admin-token-file", "", "file holding the daemons' admin token")
}

func (f *serverFlags) start(ctx context.Context, d *kit.Daemon) error {
	auth, err := server.LoadTokens(f.tokensFile)
	if err != nil {
		return err
	}
	followToken := ""
	if f.followTokenFile != "" {
		b, err := os.ReadFile(f.followTokenFile)
		if err != nil {
			return fmt.Errorf("--follow-token-file: %w", err)
		}
		followToken = strings.TrimSpace(string(b))
	}
	if f.fleetTokenFile != "" {
		b, err := os.ReadFile(f.fleetTokenFile)
		if err != nil {
			return fmt.Errorf("--fleet-admin-token-file: %w", err)
		}
		f.fleet.AdminToken = strings.TrimSpace(string(b))
	}
	f.fleet.StateFile = filepath.Join(d.DataDir, "fleet.json")
	st, err := store.Open(d.DataDir)
	if err != nil {
		return err
	}
	cfg := server.Config{
		WatchTimeout: f.watchTimeout, WatchBatch: f.watchBatch, WatchBatchInterval: f.watchBatchInterval,
		HostTTL: f.hostTTL, MemberEvents: f.memberEvents, MaxBodyBytes: f.maxBodyBytes,
		Follow: f.follow, FollowToken: followToken, Auth: auth, Logger: d.Log, Metrics: d.Metrics, Fleet: f.fleet,
	}
	if f.follow != "" {
		d.SetNotReady("follow", "not yet in step with the primary "+f.follow)
		cfg.FollowState = func(err error) {
			if err != nil {
				d.SetNotReady("follow", "primary "+f.follow+": "+err.Error())
				return
			}
			d.SetReady("follow")
		}
	}
	srv, err := server.New(cfg, st)
	if err != nil {
		st.Close()
		return err
	}
	d.OnStop("store", func(context.Context) error { return st.Close() })
	srv.Register(d.Mux)
	d.OnReload(func(context.Context) error {
		a, err := server.LoadTokens(f.tokensFile)
		if err != nil {
			return err
		}
		srv.SetAuth(a)
		return nil
	})
	d.Go(ctx, "server", srv.Run)
	d.Go(ctx, "fleet", srv.RunFleet)
	return nil
}

func agentSpec() kit.Spec {
	var f agentFlags
	return kit.Spec{
		Name:     "configd-agent",
		Listen:   "127.0.0.1:7161",
		Summary:  "configd host agent: keeps namespaces on local disk from configd servers",
		Sections: []string{"namespaces"},
		Flags:    f.register,
		Start:    f.start,
	}
}

func (f *agentFlags) register(fs *pflag.FlagSet) {
	hostname, _ := os.Hostname()
	fs.StringSliceVar(&f.servers, "server", []string{"http://127.0.0.1:7160"}, "configd servers to long-poll, in order of preference (failover)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token sent to the servers (a reader token is enough)")
	fs.StringVar(&f.host, "host", hostname, "this host's name (gray releases hash it; the naming service lists it)")
	fs.StringSliceVar(&f.labels, "label", nil, "host label key=value for gray releases (repeat)")
	fs.StringSliceVar(&f.apps, "app", nil, "apps this host serves, registered with the naming service (repeat)")
	fs.StringSliceVar(&f.namespaces, "namespace", nil, "namespace app/env/name to keep under --cache-dir (repeat; or a namespaces: section)")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "where namespaces without their own dir are kept (default <data-dir>/cache)")
	fs.StringVar(&f.advertise, "advertise", "", "address registered with the naming service (default the --listen address)")
	fs.DurationVar(&f.watchTimeout, "watch-timeout", 60*time.Second, "long-poll timeout asked of the server")
	fs.DurationVar(&f.heartbeatInterval, "heartbeat-interval", 10*time.Second, "how often the host heartbeats to the naming service (0 disables registering)")
	fs.DurationVar(&f.staleAfter, "stale-after", 2*time.Minute, "not ready once no server has answered for this long (files are still served)")
	fs.IntVar(&f.keepReleases, "keep-releases", 5, "release directories kept per namespace for restores")
	fs.DurationVar(&f.checkTimeout, "check-timeout", 30*time.Second, "longest a check or reload command may run")
}

func (f *agentFlags) start(ctx context.Context, d *kit.Daemon) error {
	var targets []agent.Target
	if d.ConfigFile != "" {
		if err := kit.DecodeSection(d.ConfigFile, "namespaces", &targets); err != nil {
			return err
		}
	}
	for _, ns := range f.namespaces {
		targets = append(targets, agent.Target{Namespace: ns})
	}
	labels := map[string]string{}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: want key=value", l)
		}
		labels[k] = v
	}
	token := os.Getenv("OPSKIT_TOKEN")
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	remote, err := client.NewRemote(f.servers, client.RemoteOptions{Token: token})
	if err != nil {
		return err
	}
	cacheDir := f.cacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(d.DataDir, "cache")
	}
	addr := f.advertise
	if addr == "" {
		addr = d.Addr().String()
	}
	ag, err := agent.New(agent.Config{
		Host: f.host, Labels: labels, Apps: f.apps, Addr: addr, Targets: targets, CacheDir: cacheDir,
		WatchTimeout: f.watchTimeout, HeartbeatInterval: f.heartbeatInterval, StaleAfter: f.staleAfter,
		KeepReleases: f.keepReleases, CheckTimeout: f.checkTimeout,
		Logger: d.Log, Metrics: d.Metrics, Readiness: d,
	}, remote)
	if err != nil {
		return err
	}
	ag.Register(d.Mux)
	d.Go(ctx, "agent", ag.Run)
	return nil
}

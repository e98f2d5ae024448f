// Command deployer is opskit's release control plane: it queues deploys per
// app and environment, rolls each out through the hosts' deploy agents in
// batches with health gates and pauses, rolls back on failure, and keeps
// the record (events, history, audit). See deployer/README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deployer/agents"
	"github.com/opskit/opskit/deployer/api"
	"github.com/opskit/opskit/deployer/chevents"
	"github.com/opskit/opskit/deployer/cli"
	"github.com/opskit/opskit/deployer/fleet/fleetcli"
	"github.com/opskit/opskit/deployer/hosts"
	"github.com/opskit/opskit/deployer/plan"
	"github.com/opskit/opskit/deployer/rollout"
	"github.com/opskit/opskit/deployer/store"
	"github.com/opskit/opskit/internal/chconn"
	"github.com/opskit/opskit/internal/kit"
)

type config struct {
	hostsFile    string
	configd      string
	configdToken string // a file
	appsFile     string
	tokensFile   string
	transfer     string
	leaseTTL     time.Duration
	maxWait      time.Duration
	tick         time.Duration
	instance     string
	agentToken   string
	pollToken    string // a file
	kafkaBrokers []string
	kafkaTasks   string
	kafkaResults string
	kafkaGroup   string
	clickhouse   chconn.Target
	fleet        fleetConfig
}

func main() {
	var c config
	kit.Main(kit.Spec{
		Name:     "deployer",
		Listen:   "127.0.0.1:7170",
		Summary:  "release control: per-app deploy queue, batches, health gates, rollback and audit",
		Flags:    func(fs *pflag.FlagSet) { c.flags(fs) },
		Start:    func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: append(cli.Commands(), fleetcli.Commands()...),
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.hostsFile, "hosts", "", "static hosts file (apps: {APP: {ENV: [{name, addr, labels}]}}), reread when it changes")
	fs.StringVar(&c.configd, "configd", "", "configd server URL(s), comma separated: the hosts of an app from its naming service when there is no --hosts (and the kit's fleet registration)")
	fs.StringVar(&c.configdToken, "configd-token-file", "", "file holding the bearer token for configd (naming service reads and the kit's fleet registration)")
	fs.StringVar(&c.appsFile, "apps", "", "apps file: rollout strategy per app (batches, pause, max_fail, on_failure, timeouts, gate); reread on SIGHUP")
	fs.StringVar(&c.tokensFile, "tokens", "", "tokens file: bearer tokens with roles per app; reread on SIGHUP (without it only loopback clients are served)")
	fs.StringVar(&c.transfer, "transfer", "", "Prometheus-compatible query API (transfer) for PromQL gates, e.g. http://127.0.0.1:7120")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", 15*time.Second, "the deployer lease's lifetime: another instance on the same store takes over this long after this one dies")
	fs.DurationVar(&c.maxWait, "max-wait", time.Minute, "longest long poll (agents' tasks, deploy events)")
	fs.DurationVar(&c.tick, "tick", time.Second, "how often the queue is looked at besides on changes")
	fs.StringVar(&c.instance, "instance", "", "this instance's name in the lease (default: hostname and a random suffix)")
	fs.StringVar(&c.agentToken, "agent-token", "", "bearer token for the agents' own API (their --api-token): direct rollbacks, proc, stats, exec")
	fs.StringVar(&c.pollToken, "agent-poll-token-file", "", "file holding the token the deploy agents present on their long poll and reports (their --deployer-token-file); without it only loopback agents are served")
	fs.StringSliceVar(&c.kafkaBrokers, "kafka-brokers", nil, "dispatch tasks over Kafka (host:port,...) instead of the agents' long poll")
	fs.StringVar(&c.kafkaTasks, "kafka-tasks-topic", "opskit-deploy-tasks", "Kafka topic of tasks (keyed by host)")
	fs.StringVar(&c.kafkaResults, "kafka-results-topic", "opskit-deploy-results", "Kafka topic of results (keyed by task id)")
	fs.StringVar(&c.kafkaGroup, "kafka-group", "opskit-deployer", "consumer group reading results")
	fs.StringVar(&c.clickhouse.Addr, "clickhouse-addr", "", "ClickHouse native protocol host:port: every deploy event is also inserted there")
	fs.StringVar(&c.clickhouse.Database, "clickhouse-database", "default", "ClickHouse database of the events table")
	fs.StringVar(&c.clickhouse.Table, "clickhouse-table", chevents.DefaultTable, "ClickHouse table of deploy events (created if missing)")
	fs.StringVar(&c.clickhouse.User, "clickhouse-user", "default", "ClickHouse user")
	c.fleet.flags(fs)
}

// reloadable holds a file's parsed content, swapped on reload.
type reloadable[T any] struct {
	mu sync.RWMutex
	v  T
}

func (r *reloadable[T]) get() T {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.v
}

func (r *reloadable[T]) set(v T) {
	r.mu.Lock()
	r.v = v
	r.mu.Unlock()
}

func (c *config) loadApps() (*plan.Apps, error) {
	if c.appsFile == "" {
		return plan.DefaultApps(), nil
	}
	b, err := os.ReadFile(c.appsFile)
	if err != nil {
		return nil, fmt.Errorf("--apps: %w", err)
	}
	return plan.ParseApps(c.appsFile, b)
}

func (c *config) loadTokens() (*api.Tokens, error) {
	if c.tokensFile == "" {
		return nil, nil
	}
	return api.LoadTokens(c.tokensFile)
}

func (c *config) hostSource() (hosts.Source, error) {
	switch {
	case c.hostsFile != "":
		// --configd may be set as well (the kit registers the daemon
		// there); the file names the hosts.
		return hosts.Static(c.hostsFile)
	case c.configd != "":
		token := ""
		if c.configdToken != "" {
			b, err := os.ReadFile(c.configdToken)
			if err != nil {
				return nil, fmt.Errorf("--configd-token-file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		return hosts.Configd(c.configd, token, nil), nil
	}
	return noHosts{}, nil
}

// noHosts is the source of a deployer started without --hosts or
// --configd: it serves its API, and every deploy fails saying why.
type noHosts struct{}

func (noHosts) Hosts(context.Context, string, string) ([]hosts.Host, error) {
	return nil, errors.New("deployer has no hosts source: start it with --hosts FILE or --configd URL")
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	src, err := c.hostSource()
	if err != nil {
		return err
	}
	var apps reloadable[*plan.Apps]
	var tokens reloadable[*api.Tokens]
	a, err := c.loadApps()
	if err != nil {
		return err
	}
	apps.set(a)
	tk, err := c.loadTokens()
	if err != nil {
		return err
	}
	tokens.set(tk)
	d.OnReload(func(context.Context) error {
		a, err := c.loadApps()
		if err != nil {
			return err
		}
		tk, err := c.loadTokens()
		if err != nil {
			return err
		}
		apps.set(a)
		tokens.set(tk)
		d.Log.Info("apps and tokens reloaded", "apps", len(a.Apps))
		return nil
	})

	st, err := store.Open(d.DataDir, 10*time.Second)
	if err != nil {
		return err
	}
	d.OnStop("store", func(context.Context) error { return st.Close() })
	if c.clickhouse.Addr != "" {
		sh, err := chevents.Open(st, chevents.Options{Target: c.clickhouse, Metrics: d.Metrics, Log: d.Log})
		if err != nil {
			return err
		}
		d.OnStop("clickhouse", func(context.Context) error { return sh.Close() })
		d.Go(ctx, "clickhouse-events", sh.Run)
	}

	hub := agents.NewHub()
	var dispatch rollout.Dispatcher = hub
	var kafka *agents.Kafka
	if len(c.kafkaBrokers) > 0 {
		kafka, err = agents.NewKafka(agents.KafkaOptions{Brokers: c.kafkaBrokers, TasksTopic: c.kafkaTasks,
			ResultsTopic: c.kafkaResults, Group: c.kafkaGroup, Log: d.Log})
		if err != nil {
			return err
		}
		d.OnStop("kafka", func(context.Context) error { kafka.Close(); return nil })
		dispatch = kafka
	}
	instance := c.instance
	if instance == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		instance = host + "-" + hex.EncodeToString(b[:])
	}
	var gate rollout.Gate
	if c.transfer != "" {
		gate = &rollout.PromQLGate{Base: c.transfer, HTTP: &http.Client{}}
	}
	eng := rollout.New(rollout.Options{Store: st, Hosts: src, Apps: apps.get, Dispatch: dispatch, Gate: gate,
		AgentToken: c.agentToken, AgentHTTP: &http.Client{}, Holder: instance, LeaseTTL: c.leaseTTL, Tick: c.tick,
		Log: d.Log})
	srv := &api.Server{Engine: eng, Store: st, Hub: hub, Tokens: tokens.get, MaxWait: c.maxWait, Log: d.Log, Base: ctx}
	if c.pollToken != "" {
		b, err := os.ReadFile(c.pollToken)
		if err != nil {
			return fmt.Errorf("--agent-poll-token-file: %w", err)
		}
		if srv.AgentsToken = strings.TrimSpace(string(b)); srv.AgentsToken == "" {
			return fmt.Errorf("--agent-poll-token-file %s is empty", c.pollToken)
		}
	}
	srv.Register(d.Mux)
	if err := c.fleet.start(ctx, d, src, st, tokens.get, c.agentToken); err != nil {
		return err
	}

	d.Metrics.NewGauge("opskit_deployer_agent_polls_parked", func() float64 { return float64(hub.Parked()) })
	d.Metrics.NewGauge("opskit_deployer_tasks_pending", func() float64 { return float64(hub.Pending()) })
	d.Metrics.NewGauge("opskit_deployer_leader", func() float64 {
		if eng.Leader() {
			return 1
		}
		return 0
	})
	for _, state := range []string{store.Queued, store.Running, store.Paused} {
		d.Metrics.NewGauge(fmt.Sprintf(`opskit_deployer_deploys{state=%q}`, state), func() float64 {
			ds, _ := st.List(store.Filter{States: []string{state}})
			return float64(len(ds))
		})
	}

	d.Go(ctx, "engine", eng.Run)
	if kafka != nil {
		d.Go(ctx, "kafka-results", func(ctx context.Context) error { return kafka.Results(ctx, eng.Report) })
	}
	d.Log.Info("deployer started", "instance", instance, "kafka", len(c.kafkaBrokers) > 0, "gates", c.transfer != "")
	return nil
}

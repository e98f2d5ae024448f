// Command judge evaluates alert strategies on every point transfer routes
// to it, detects nodata, and sends alerts to alarm or Alertmanager through
// the Alertmanager v2 API. See judge/README.md.
package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/judge/check"
	"github.com/opskit/opskit/judge/engine"
	"github.com/opskit/opskit/judge/history"
	"github.com/opskit/opskit/judge/kafkaout"
	"github.com/opskit/opskit/judge/node"
	"github.com/opskit/opskit/judge/notify"
	"github.com/opskit/opskit/transfer/intake"
)

type config struct {
	strategies        string
	groups            string
	alarm             []string
	resendInterval    time.Duration
	notifyTimeout     time.Duration
	transferURL       string
	maxSeries         int
	sweepInterval     time.Duration
	saveInterval      time.Duration
	watchInterval     time.Duration
	resolvedRetention time.Duration
	maxBodyBytes      int64
	refill            bool
	historyTimeout    time.Duration
	idleExpiry        time.Duration
	kafkaBrokers      []string
	kafkaTopic        string
}

func main() {
	var c config
	kit.Main(kit.Spec{
		Name:    "judge",
		Listen:  "127.0.0.1:7130",
		Summary: "streaming evaluation of alert strategies on every point, nodata detection, alerts to alarm or Alertmanager",
		Flags:   func(fs *pflag.FlagSet) { c.flags(fs) },
		Start:   func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: []kit.Command{{
			Name:    "check",
			Summary: "evaluate --strategies on open-falcon JSON lines from stdin; print alert transitions as JSON lines",
			Run: func(ctx context.Context, args []string, io kit.IO) int {
				return check.Main(ctx, args, io.In, io.Out, io.Err)
			},
		}},
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.strategies, "strategies", "", "strategy file (YAML; reloaded on SIGHUP, ctl reload, and when it changes); without it nothing is evaluated")
	fs.StringVar(&c.groups, "groups", "", "host groups file (YAML: group: [endpoint, ...]), reloaded with the strategies")
	fs.StringSliceVar(&c.alarm, "alarm", nil, "alert receivers speaking the Alertmanager v2 API (alarm or Alertmanager): host:port or URL, comma separated")
	fs.DurationVar(&c.resendInterval, "resend-interval", time.Minute, "how often firing alerts are sent again (their endsAt is 4 intervals ahead)")
	fs.DurationVar(&c.notifyTimeout, "notify-timeout", 10*time.Second, "deadline of one POST to a receiver")
	fs.StringVar(&c.transferURL, "transfer-url", "", "transfer's base URL, e.g. http://127.0.0.1:7120: alerts' generatorURL, window refill of new series, c_avg baselines")
	fs.BoolVar(&c.refill, "refill", true, "with --transfer-url, fill a new series' window from transfer so all(#3) need not wait three points")
	fs.DurationVar(&c.historyTimeout, "history-timeout", 5*time.Second, "deadline of one query to transfer")
	fs.IntVar(&c.maxSeries, "max-series", 1_000_000, "most series kept; points of new series beyond it are dropped and counted (0 = no limit)")
	fs.DurationVar(&c.idleExpiry, "series-idle-expiry", 0, "forget a series silent for this long and resolve its alerts, nodata included (0 = keep series forever)")
	fs.DurationVar(&c.sweepInterval, "sweep-interval", time.Second, "how often nodata is checked")
	fs.DurationVar(&c.saveInterval, "save-interval", 5*time.Second, "how often changed alert state is saved (transitions are saved before a push is answered)")
	fs.DurationVar(&c.watchInterval, "watch-interval", 2*time.Second, "how often the strategy and groups files are checked for changes (0 = only on reload)")
	fs.DurationVar(&c.resolvedRetention, "resolved-retention", 15*time.Minute, "how long a delivered recovery is still sent before it is forgotten")
	fs.StringSliceVar(&c.kafkaBrokers, "kafka-brokers", nil, "also produce every alert transition as JSON to Kafka (seed brokers, comma separated)")
	fs.StringVar(&c.kafkaTopic, "kafka-topic", "judge-transitions", "Kafka topic of the transitions")
	fs.Int64Var(&c.maxBodyBytes, "max-body-bytes", intake.DefaultMaxBodyBytes, "largest /api/push body accepted (413 beyond)")
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	if c.strategies == "" {
		d.Log.Warn("no --strategies file: judge takes points but evaluates nothing")
	}
	var addrs []string
	for _, a := range c.alarm {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		d.Log.Warn("no --alarm receivers: alerts are evaluated and kept, but sent nowhere")
	}
	ec := engine.Config{MaxSeries: c.maxSeries, ResolvedRetention: c.resolvedRetention, SeriesIdleExpiry: c.idleExpiry}
	if c.transferURL != "" {
		ec.History = history.New(c.transferURL, c.historyTimeout)
		ec.NoRefill = !c.refill
	}
	lim := intake.DefaultLimits()
	lim.MaxBodyBytes = c.maxBodyBytes
	var onTransitions func([]engine.Transition)
	if len(c.kafkaBrokers) > 0 {
		k, err := kafkaout.New(kafkaout.Options{Brokers: c.kafkaBrokers, Topic: c.kafkaTopic})
		if err != nil {
			return err
		}
		onTransitions = k.Send
		d.OnStop("kafka output", k.Close)
		d.Metrics.NewGauge(`opskit_judge_kafka_records_total{result="ok"}`, func() float64 { ok, _ := k.Counts(); return float64(ok) })
		d.Metrics.NewGauge(`opskit_judge_kafka_records_total{result="failed"}`, func() float64 { _, f := k.Counts(); return float64(f) })
	}
	n, err := node.Open(node.Config{
		OnTransitions: onTransitions,
		Dye:           d.Dye,
		DataDir:       d.DataDir,
		Strategies:    c.strategies,
		Groups:        c.groups,
		SweepInterval: c.sweepInterval,
		SaveInterval:  c.saveInterval,
		WatchInterval: c.watchInterval,
		Limits:        lim,
		Engine:        ec,
		Notify: notify.Config{Addrs: addrs, ResendInterval: c.resendInterval, Timeout: c.notifyTimeout,
			GeneratorURL: c.transferURL},
	}, d.Metrics, d.Log)
	if err != nil {
		return err
	}
	n.Register(d.Mux)
	d.OnReload(n.Reload)
	d.OnStop("alert state", func(context.Context) error { return n.Close() })
	d.HandleAdmin("alerts", func(context.Context, []string) (any, error) { return n.Alerts(), nil })
	d.Go(ctx, "judge", n.Run)
	return nil
}

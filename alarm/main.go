// Command alarm is opskit's alert manager: Alertmanager v2 API intake and
// queries, routing into groups with Alertmanager's timers, silences,
// inhibition, webhook and exec receivers with retries and a dead-letter
// list, all state kept on disk. See alarm/README.md.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/alertstore"
	"github.com/opskit/opskit/alarm/cli"
	"github.com/opskit/opskit/alarm/config"
	"github.com/opskit/opskit/alarm/history"
	"github.com/opskit/opskit/alarm/inhibit"
	"github.com/opskit/opskit/alarm/kafkaintake"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/server"
	"github.com/opskit/opskit/alarm/silence"
	"github.com/opskit/opskit/alarm/store"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/kit"
)

type flags struct {
	notifyConfig     string
	webhookURL       string
	externalURL      string
	maxBodyBytes     int64
	notify           notify.Options
	alertRetention   time.Duration
	silenceRetention time.Duration
	historyRetention time.Duration
	gcInterval       time.Duration
	noHistory        bool
	clickhouse       history.ClickHouseOptions
	kafka            kafkaintake.Options
}

func main() {
	var f flags
	kit.Main(kit.Spec{
		Name:    "alarm",
		Listen:  "127.0.0.1:7140",
		Summary: "Alertmanager-compatible alert intake, grouping, silences, inhibition and webhook notification, with state on disk",
		Flags:   f.register,
		Start:   f.start,
		Commands: []kit.Command{
			{Name: "send", Summary: "post alerts read as JSON lines on stdin to an alarm (--addr)", Run: func(ctx context.Context, args []string, io kit.IO) int {
				return cli.Send(ctx, args, io.In, io.Out, io.Err)
			}},
			{Name: "history", Summary: "print alert history as JSON lines (--since 24h --match 'endpoint=web01')", Run: func(ctx context.Context, args []string, io kit.IO) int {
				return cli.History(ctx, args, io.Out, io.Err)
			}},
		},
	})
}

func (f *flags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.notifyConfig, "notify-config", "", "routing, receivers and inhibition rules: a YAML file in Alertmanager's format (reloaded on SIGHUP)")
	fs.StringVar(&f.webhookURL, "webhook-url", "", "without --notify-config: post every group (by alertname) to this URL")
	fs.StringVar(&f.externalURL, "external-url", "", "URL alarm is reached at, sent as externalURL in webhooks (default http://LISTEN)")
	fs.Int64Var(&f.maxBodyBytes, "max-body-bytes", 16<<20, "largest POST /api/v2/alerts body (413 beyond)")
	fs.IntVar(&f.notify.Workers, "notify-workers", 8, "notifications delivered concurrently")
	fs.DurationVar(&f.notify.RetryInitial, "retry-initial", time.Second, "wait before the first retry of a failed notification (doubles each time)")
	fs.DurationVar(&f.notify.RetryMax, "retry-max", time.Minute, "longest wait between retries")
	fs.DurationVar(&f.notify.RetryTimeout, "retry-timeout", 10*time.Minute, "give a notification up (dead letter) this long after it was made")
	fs.DurationVar(&f.notify.SendTimeout, "send-timeout", 10*time.Second, "time limit of one delivery attempt")
	fs.DurationVar(&f.alertRetention, "alert-retention", time.Hour, "keep resolved alerts this long after they end")
	fs.DurationVar(&f.silenceRetention, "silence-retention", 120*time.Hour, "keep expired silences this long")
	fs.DurationVar(&f.notify.LogRetention, "notification-log-retention", 120*time.Hour, "remember what was sent to whom this long")
	fs.DurationVar(&f.historyRetention, "history-retention", 7*24*time.Hour, "keep history events this long")
	fs.DurationVar(&f.gcInterval, "gc-interval", time.Minute, "how often retention is applied")
	fs.BoolVar(&f.noHistory, "no-history", false, "do not keep a history of transitions")
	fs.StringVar(&f.clickhouse.Addr, "clickhouse-addr", "", "also write history to ClickHouse at HOST:PORT (native protocol)")
	fs.StringVar(&f.clickhouse.Database, "clickhouse-database", "default", "ClickHouse database of the history table")
	fs.StringVar(&f.clickhouse.Table, "clickhouse-table", "alert_events", "ClickHouse history table (created if missing)")
	fs.StringVar(&f.clickhouse.User, "clickhouse-user", "default", "ClickHouse user")
	fs.StringSliceVar(&f.kafka.Brokers, "kafka-brokers", nil, "also read alerts from Kafka (comma-separated HOST:PORT list)")
	fs.StringVar(&f.kafka.Topic, "kafka-topic", "alerts", "Kafka topic of alerts (a record is a v2 POST body or one alert)")
	fs.StringVar(&f.kafka.Group, "kafka-group", "alarm", "Kafka consumer group")
}

func (f *flags) loadConfig(client *http.Client) (*config.Config, error) {
	if f.notifyConfig != "" {
		return config.Load(f.notifyConfig, client)
	}
	return config.Default(f.webhookURL, client)
}

func (f *flags) start(ctx context.Context, d *kit.Daemon) error {
	// Keep a connection per worker to each receiver instead of redialling.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = max(f.notify.Workers, 2)
	client := &http.Client{Transport: transport}
	cfg, err := f.loadConfig(client)
	if err != nil {
		return err
	}
	db, err := store.Open(d.DataDir)
	if err != nil {
		return err
	}
	d.OnStop("state file", func(context.Context) error { return db.Close() })
	now := time.Now
	sil, err := silence.Open(db, now, f.silenceRetention)
	if err != nil {
		return err
	}
	alerts, err := alertstore.Open(d.DataDir, now, f.alertRetention, 0)
	if err != nil {
		return err
	}
	d.OnStop("alert log", func(context.Context) error { return alerts.Close() })
	var hist *history.Log
	if !f.noHistory {
		var sink history.Sink
		if f.clickhouse.Addr != "" {
			f.clickhouse.Password = os.Getenv("OPSKIT_CLICKHOUSE_PASSWORD")
			ch, err := history.OpenClickHouse(ctx, f.clickhouse)
			if err != nil {
				return err
			}
			d.OnStop("clickhouse", func(context.Context) error { return ch.Close() })
			sink = ch
		}
		hist = history.New(db, f.historyRetention, now, sink, d.Log, d.Metrics)
	}
	externalURL := f.externalURL
	if externalURL == "" {
		externalURL = "http://" + d.Addr().String()
	}
	nopt := f.notify
	nopt.ExternalURL = externalURL
	nopt.Now = now
	nopt.Hops, nopt.Dye = hop.NewSet(d.Metrics), d.Dye
	var rec notify.Recorder
	if hist != nil {
		rec = hist
	}
	notifier := notify.New(db, cfg.Receivers, nopt, d.Log, d.Metrics, rec)
	opts := func(c *config.Config) server.Options {
		return server.Options{
			ResolveTimeout: c.ResolveTimeout, MaxBodyBytes: f.maxBodyBytes, Limits: alert.DefaultLimits,
			ExternalURL: externalURL, ConfigText: c.Text, Now: now, Dye: d.Dye,
		}
	}
	srv := server.New(ctx, opts(cfg), server.Parts{
		Alerts: alerts, Silences: sil, Inhibitor: inhibit.New(cfg.InhibitRules, now),
		Route: cfg.Route, Intervals: cfg.TimeIntervals, Maintenance: cfg.Maintenance, Notifier: notifier, History: hist,
	}, d.Log, d.Metrics)
	d.OnStop("dispatcher", func(context.Context) error { srv.Dispatcher.Stop(); return nil })
	srv.Register(d.Mux)
	if hist != nil {
		d.Go(ctx, "history", hist.Run)
	}
	d.Go(ctx, "notifier", notifier.Run)
	d.Go(ctx, "gc", func(ctx context.Context) error {
		t := time.NewTicker(f.gcInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				srv.GC()
			}
		}
	})
	d.OnReload(func(context.Context) error {
		c, err := f.loadConfig(client)
		if err != nil {
			return err
		}
		notifier.SetReceivers(c.Receivers)
		srv.SetInhibitor(inhibit.New(c.InhibitRules, now))
		srv.SetOptions(opts(c))
		srv.SetMaintenance(c.Maintenance)
		srv.Dispatcher.SetRoute(c.Route, c.TimeIntervals, alerts.List())
		return nil
	})
	if len(f.kafka.Brokers) > 0 {
		decode := func(body []byte) ([]*alert.Alert, []*alert.ItemError, error) {
			o := srv.Options()
			return alert.Decode(body, o.Now(), o.ResolveTimeout, o.Limits)
		}
		consumer, err := kafkaintake.New(f.kafka, srv, decode, d.Log, d.Metrics)
		if err != nil {
			return err
		}
		d.Go(ctx, "kafka intake", consumer.Run)
	}
	n := srv.Restore()
	d.Log.Info("alarm ready", "alerts_restored", n, "silences", len(sil.List()), "receivers", fmt.Sprint(notifier.Receivers()))
	return nil
}

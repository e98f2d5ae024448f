// Package node wires a judge daemon: the strategy files (reloaded on
// SIGHUP and when they change), the open-falcon intake on /api/push, the
// engine, the nodata sweep, the persisted alert state and the sender.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/judge/engine"
	"github.com/opskit/opskit/judge/notify"
	"github.com/opskit/opskit/judge/state"
	"github.com/opskit/opskit/judge/strategy"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

// Config is a node's configuration.
type Config struct {
	DataDir    string
	Strategies string // the strategy file
	Groups     string // the host groups file, optional
	Engine     engine.Config
	Notify     notify.Config
	// SweepInterval is how often nodata is checked.
	SweepInterval time.Duration
	// SaveInterval is how often a full snapshot of changed alert state
	// (last values, delivery) is written; state changes are journaled
	// before the push that caused them is answered.
	SaveInterval time.Duration
	// WatchInterval is how often the strategy and groups files are
	// checked for changes (0 = only on reload).
	WatchInterval time.Duration
	Limits        intake.Limits
	// OnTransitions, when set, also gets every batch of transitions, after
	// they are journaled (e.g. the Kafka output).
	OnTransitions func([]engine.Transition)
	// Dye traces dyed points through evaluation (and their alerts to the
	// receivers, through Notify.Dye).
	Dye *dye.Tracer
}

// Node is a running judge.
type Node struct {
	cfg    Config
	log    *slog.Logger
	eng    *engine.Engine
	sender *notify.Sender

	saveMu sync.Mutex // one save at a time, in order
	store  *state.Store

	reloadMu   sync.Mutex
	fileStamp  string
	lastReload error

	transitions  *metrics.Set
	reloadErrors *metrics.Counter
	saveErrors   *metrics.Counter
	requests     *metrics.Counter
	rejected     *metrics.Counter
}

// Open loads the strategies and the saved alert state.
func Open(cfg Config, set *metrics.Set, log *slog.Logger) (*Node, error) {
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Second
	}
	if cfg.SaveInterval <= 0 {
		cfg.SaveInterval = 5 * time.Second
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	n := &Node{cfg: cfg, log: log, eng: engine.New(cfg.Engine), transitions: set}
	strategies, err := n.load()
	if err != nil {
		return nil, err
	}
	n.fileStamp = n.stamp()
	n.eng.SetStrategies(strategies, time.Now())
	store, saved, err := state.Open(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n.store = store
	n.eng.Restore(saved, time.Now())
	n.eng.Changes() // what was restored is on disk already
	cfg.Notify.Log = log
	cfg.Notify.Dye = cfg.Dye
	cfg.Notify.Hops = hop.NewSet(set)
	if n.sender, err = notify.New(cfg.Notify, n.eng); err != nil {
		return nil, err
	}
	n.registerMetrics(set)
	log.Info("strategies loaded", "file", cfg.Strategies, "strategies", len(strategies.List), "max_window", strategies.MaxWindow(), "restored_alerts", len(saved))
	return n, nil
}

// Engine is the node's engine.
func (n *Node) Engine() *engine.Engine { return n.eng }

func (n *Node) registerMetrics(set *metrics.Set) {
	stat := func(f func(engine.Stats) float64) func() float64 {
		return func() float64 { return f(n.eng.Stats()) }
	}
	set.NewGauge("opskit_judge_points_total", stat(func(s engine.Stats) float64 { return float64(s.Points) }))
	set.NewGauge("opskit_judge_points_evaluated_total", stat(func(s engine.Stats) float64 { return float64(s.Points - s.Unwatched - s.OutOfOrder - s.SeriesDropped) }))
	set.NewGauge("opskit_judge_points_unwatched_total", stat(func(s engine.Stats) float64 { return float64(s.Unwatched) }))
	set.NewGauge("opskit_judge_points_out_of_order_total", stat(func(s engine.Stats) float64 { return float64(s.OutOfOrder) }))
	set.NewGauge("opskit_judge_series_expired_total", stat(func(s engine.Stats) float64 { return float64(s.SeriesExpired) }))
	set.NewGauge("opskit_judge_series_dropped_total", stat(func(s engine.Stats) float64 { return float64(s.SeriesDropped) }))
	set.NewGauge(`opskit_judge_history_requests_total{result="ok"}`, stat(func(s engine.Stats) float64 { return float64(s.HistoryDone) }))
	set.NewGauge(`opskit_judge_history_requests_total{result="failed"}`, stat(func(s engine.Stats) float64 { return float64(s.HistoryFailed) }))
	set.NewGauge(`opskit_judge_history_requests_total{result="dropped"}`, stat(func(s engine.Stats) float64 { return float64(s.HistoryDrop) }))
	set.NewGauge("opskit_judge_series", stat(func(s engine.Stats) float64 { return float64(s.Series) }))
	set.NewGauge("opskit_judge_alerts", stat(func(s engine.Stats) float64 { return float64(s.Alerts) }))
	set.NewGauge("opskit_judge_alerts_firing", stat(func(s engine.Stats) float64 { return float64(s.Firing) }))
	set.NewGauge(`opskit_judge_notify_posts_total{result="ok"}`, func() float64 { s, _ := n.sender.Counts(); return float64(s) })
	set.NewGauge(`opskit_judge_notify_posts_total{result="failed"}`, func() float64 { _, f := n.sender.Counts(); return float64(f) })
	n.reloadErrors = set.NewCounter("opskit_judge_strategy_reload_errors_total")
	n.saveErrors = set.NewCounter("opskit_judge_state_save_errors_total")
	n.requests = set.NewCounter("opskit_judge_push_requests_total")
	n.rejected = set.NewCounter("opskit_judge_push_items_rejected_total")
}

func (n *Node) countTransitions(trs []engine.Transition) {
	for _, t := range trs {
		n.transitions.GetOrCreateCounter(fmt.Sprintf(`opskit_judge_transitions_total{status=%q,kind=%q}`, t.Status, t.Kind)).Inc()
	}
}

// maxLoggedTransitions is the most transitions of one batch logged one by one.
const maxLoggedTransitions = 20

// Push evaluates points that arrived now; transitions are saved before it
// returns, then sent.
func (n *Node) Push(now time.Time, pts []metric.Point) []engine.Transition {
	trs := n.eng.Ingest(now, pts)
	n.after(trs)
	return trs
}

func (n *Node) after(trs []engine.Transition) {
	if len(trs) == 0 {
		return
	}
	n.countTransitions(trs)
	if len(trs) > maxLoggedTransitions {
		// A storm: one line, not thousands (the counts are on /metrics).
		counts := map[string]int{}
		for _, t := range trs {
			counts[t.Status]++
		}
		n.log.Info("alerts changed", "firing", counts["firing"], "resolved", counts["resolved"], "repeat", counts["repeat"])
	} else {
		for _, t := range trs {
			n.log.Info("alert "+t.Status, "alertname", t.Alert, "kind", t.Kind, "endpoint", t.Labels["endpoint"], "metric", t.Labels["metric"], "value", t.Value, "duration", t.Duration)
		}
	}
	n.journal()
	n.sender.Kick()
	if n.cfg.OnTransitions != nil {
		n.cfg.OnTransitions(trs)
	}
}

// journal appends the alerts' state changes to the journal (fsynced).
func (n *Node) journal() {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	put, removed := n.eng.Changes()
	if err := n.store.Append(put, removed); err != nil {
		// The next compaction writes everything.
		n.eng.MarkDirty()
		n.saveErrors.Inc()
		n.log.Error("journaling alert state failed; the next snapshot will hold it", "err", err)
	}
}

// compact writes a full snapshot (values and delivery flags included) when
// anything changed, and empties the journal.
func (n *Node) compact(force bool) error {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.eng.Changes() // the snapshot holds them
	alerts, changed := n.eng.Snapshot()
	if !changed && !force && n.store.JournalSize() == 0 {
		return nil
	}
	if err := n.store.Compact(alerts); err != nil {
		n.eng.MarkDirty()
		n.saveErrors.Inc()
		n.log.Error("saving alert state failed; will retry", "err", err)
		return err
	}
	return nil
}

// Register serves POST /api/push (open-falcon JSON), GET /api/alerts and
// GET /api/strategies on mux.
func (n *Node) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/push", n.handlePush)
	mux.HandleFunc("GET /api/alerts", func(w http.ResponseWriter, r *http.Request) {
		intake.WriteJSON(w, http.StatusOK, n.Alerts())
	})
	mux.HandleFunc("GET /api/strategies", func(w http.ResponseWriter, r *http.Request) {
		intake.WriteJSON(w, http.StatusOK, n.StrategiesStatus())
	})
}

// Alerts lists the alerts judge holds (pending, firing, recently resolved).
func (n *Node) Alerts() []engine.Alert {
	return n.eng.List()
}

// StrategiesStatus says which file is loaded and whether the last reload failed.
type StrategiesStatus struct {
	File       string   `json:"file"`
	Strategies []string `json:"strategies"`
	LastError  string   `json:"last_reload_error,omitempty"`
}

// StrategiesStatus returns the loaded strategies and the last reload error.
func (n *Node) StrategiesStatus() StrategiesStatus {
	st := StrategiesStatus{File: n.cfg.Strategies, Strategies: []string{}}
	for _, s := range n.eng.Strategies().List {
		st.Strategies = append(st.Strategies, s.Name)
	}
	n.reloadMu.Lock()
	if n.lastReload != nil {
		st.LastError = n.lastReload.Error()
	}
	n.reloadMu.Unlock()
	return st
}

func (n *Node) handlePush(w http.ResponseWriter, r *http.Request) {
	n.requests.Inc()
	body, code, err := intake.ReadBody(w, r, n.cfg.Limits)
	if err != nil {
		intake.WriteJSON(w, code, intake.Response{Rejected: []intake.Rejection{}, Error: err.Error()})
		return
	}
	now := time.Now()
	res, err := falcon.Decode(body, now.Unix(), n.cfg.Limits)
	if err != nil {
		intake.WriteJSON(w, http.StatusBadRequest, intake.Response{Rejected: []intake.Rejection{}, Error: err.Error()})
		return
	}
	n.rejected.Add(len(res.Rejected))
	if len(res.Rejected) > 0 {
		n.log.Debug("push items rejected", "rejected", len(res.Rejected), "first", res.Rejected[0].Detail)
	}
	n.Push(now, res.Points)
	if n.cfg.Dye.Active() {
		took := time.Since(now)
		n.cfg.Dye.Points("evaluate", res.Points, func(*metric.Point) time.Duration { return took })
	}
	rej := res.Rejected
	if rej == nil {
		rej = []intake.Rejection{}
	}
	intake.WriteJSON(w, http.StatusOK, intake.Response{Accepted: len(res.Points), Rejected: rej})
}

// Reload rereads the strategy and groups files; a bad file keeps the
// strategies in force and the error says where it is wrong.
func (n *Node) Reload(context.Context) error {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	n.fileStamp = n.stamp()
	set, err := n.load()
	n.lastReload = err
	if err != nil {
		n.reloadErrors.Inc()
		return fmt.Errorf("strategies not reloaded, the previous ones stay in force: %w", err)
	}
	trs := n.eng.SetStrategies(set, time.Now())
	n.log.Info("strategies reloaded", "strategies", len(set.List), "max_window", set.MaxWindow(), "resolved", len(trs))
	n.after(trs)
	return nil
}

// load reads the strategy files; with none configured the set is empty.
func (n *Node) load() (*strategy.Set, error) {
	if n.cfg.Strategies == "" {
		return strategy.Parse("(none)", nil, nil)
	}
	return strategy.Load(n.cfg.Strategies, n.cfg.Groups)
}

// stamp identifies the files' versions by size and modification time.
func (n *Node) stamp() string {
	s := ""
	for _, p := range []string{n.cfg.Strategies, n.cfg.Groups} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return s
}

// Run sweeps for nodata, saves state, watches the files and sends alerts
// until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		n.sender.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		n.eng.RunHistory(ctx, 2)
	}()
	sweep := time.NewTicker(n.cfg.SweepInterval)
	save := time.NewTicker(n.cfg.SaveInterval)
	defer sweep.Stop()
	defer save.Stop()
	var watch <-chan time.Time
	if n.cfg.WatchInterval > 0 {
		t := time.NewTicker(n.cfg.WatchInterval)
		defer t.Stop()
		watch = t.C
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-sweep.C:
			n.after(n.eng.Sweep(now))
		case <-save.C:
			n.compact(false)
		case <-watch:
			n.reloadMu.Lock()
			changed := n.stamp() != n.fileStamp
			n.reloadMu.Unlock()
			if changed {
				if err := n.Reload(ctx); err != nil {
					n.log.Error("strategy file changed but does not load", "err", err)
				}
			}
		}
	}
}

// Close saves the alert state a last time.
func (n *Node) Close() error {
	err := n.compact(true)
	return errors.Join(err, n.store.Close())
}

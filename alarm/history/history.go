// Package history keeps every alert transition (firing, resolved, grouped,
// silenced, inhibited, notification queued, notified, dead-lettered) in the
// state file for a retention period, and optionally copies it to a Sink
// such as ClickHouse. Recording never blocks the alert path: events go
// through a bounded queue and every one dropped is counted.
package history

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/store"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/queue"
)

// Event is one transition.
type Event struct {
	Time         time.Time    `json:"time"`
	Kind         string       `json:"kind"`
	Fingerprint  string       `json:"fingerprint,omitempty"`
	Labels       alert.Labels `json:"labels,omitempty"`
	GroupKey     string       `json:"groupKey,omitempty"`
	Receiver     string       `json:"receiver,omitempty"`
	Notification string       `json:"notification,omitempty"`
	Detail       string       `json:"detail,omitempty"`
}

// Sink receives batches of events besides the local file.
type Sink interface {
	Write(ctx context.Context, events []Event) error
}

// Log is the history.
type Log struct {
	db        *store.DB
	q         *queue.Queue[Event]
	retention time.Duration
	now       func() time.Time
	sink      Sink
	log       *slog.Logger

	sinkErrors *metrics.Counter
}

// New makes a history over db; sink may be nil.
func New(db *store.DB, retention time.Duration, now func() time.Time, sink Sink, log *slog.Logger, set *metrics.Set) *Log {
	return &Log{
		db: db, retention: retention, now: now, sink: sink, log: log,
		q:          queue.New[Event](100000, set.NewCounter(`opskit_alarm_history_events_dropped_total`)),
		sinkErrors: set.NewCounter(`opskit_alarm_history_sink_errors_total`),
	}
}

// RecordAlert records a transition of one alert.
func (l *Log) RecordAlert(kind string, a *alert.Alert, groupKey, receiver, detail string) {
	l.q.TryPush(Event{Time: l.now(), Kind: kind, Fingerprint: a.Fingerprint().String(), Labels: a.Labels,
		GroupKey: groupKey, Receiver: receiver, Detail: detail})
}

// RecordSilence records a silence being set or expired; labels are the
// ones its equality matchers name, so --match finds it.
func (l *Log) RecordSilence(kind string, labels alert.Labels, detail string) {
	l.q.TryPush(Event{Time: l.now(), Kind: kind, Labels: labels, Detail: detail})
}

// Record records a notification's transition (notify.Recorder).
func (l *Log) Record(kind string, n *notify.Notification, detail string) {
	l.q.TryPush(Event{Time: l.now(), Kind: kind, Labels: n.GroupLabels, GroupKey: n.GroupKey,
		Receiver: n.Receiver, Notification: n.ID, Detail: detail})
}

// Run writes queued events until ctx ends, then writes what is left.
func (l *Log) Run(ctx context.Context) error {
	batch := make([]Event, 0, 1024)
	for {
		var err error
		batch, err = l.q.PopBatch(ctx, batch, 1024)
		if len(batch) > 0 {
			l.write(batch)
		}
		if err != nil || ctx.Err() != nil {
			// Drain what is queued before stopping.
			l.q.Close()
			for {
				batch, err = l.q.PopBatch(context.Background(), batch, 1024)
				if err != nil {
					return nil
				}
				l.write(batch)
			}
		}
	}
}

func (l *Log) write(batch []Event) {
	err := l.db.Batch(func(tx *store.Tx) error {
		kvs := make([]store.KV, 0, len(batch))
		for _, e := range batch {
			seq, err := tx.NextSeq(store.History)
			if err != nil {
				return err
			}
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			kvs = append(kvs, store.KV{Key: store.TimeKey(e.Time, seq), Value: v})
		}
		return tx.Write(store.History, kvs)
	})
	if err != nil {
		l.log.Error("history write failed", "events", len(batch), "err", err)
	}
	if l.sink != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := l.sink.Write(ctx, batch); err != nil {
			l.sinkErrors.Inc()
			l.log.Error("history sink write failed", "events", len(batch), "err", err)
		}
		cancel()
	}
}

// Query returns the events since `since` whose labels all matchers accept,
// oldest first, at most limit (0 = no limit; the newest are kept).
func (l *Log) Query(since time.Time, ms []*metric.Matcher, limit int) ([]Event, error) {
	var out []Event
	err := l.db.ForEach(store.History, store.TimeKey(since, 0), func(k, v []byte) error {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return nil
		}
		for _, m := range ms {
			if !m.Matches(e.Labels[m.Name]) {
				return nil
			}
		}
		out = append(out, e)
		if limit > 0 && len(out) > 2*limit {
			out = append(out[:0], out[len(out)-limit:]...)
		}
		return nil
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}

// GC deletes events older than the retention.
func (l *Log) GC() error {
	cutoff := store.TimeKey(l.now().Add(-l.retention), 0)
	for {
		var kvs []store.KV
		l.db.ForEach(store.History, nil, func(k, v []byte) error {
			if string(k) >= string(cutoff) || len(kvs) >= 10000 {
				return store.ErrStop
			}
			kvs = append(kvs, store.KV{Key: append([]byte(nil), k...)})
			return nil
		})
		if len(kvs) == 0 {
			return nil
		}
		if err := l.db.Write(store.History, kvs); err != nil {
			return err
		}
	}
}

// Package notify turns a flushed alert group into notifications and
// delivers them. It decides, with a notification log, whether a group needs
// a notification at all (Alertmanager's rules: something new fires, a
// resolution to report, or the repeat interval passed); writes the
// notification to a durable outbox together with the log entry, in one
// transaction; and delivers it with retries and exponential backoff until a
// time limit, after which it lands in the dead-letter list. A notification
// carries a stable Idempotency-Key, so one resent after a crash can be
// recognised by the receiver.
package notify

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/queue"
)

// Group is what the dispatcher hands over at a flush.
type Group struct {
	Receiver       string
	GroupKey       string
	GroupLabels    alert.Labels
	RepeatInterval time.Duration
	Alerts         []*alert.Alert // sorted, muted ones already removed
}

// LogEntry is the notification log's record of what an integration last
// told a receiver about a group.
type LogEntry struct {
	Firing    []alert.Fingerprint `json:"firing"`
	Resolved  []alert.Fingerprint `json:"resolved"`
	Timestamp time.Time           `json:"timestamp"`
	// Notification is the outbox ID of that notification ("" when nothing
	// had to be sent, e.g. only resolved alerts and send_resolved false).
	Notification string `json:"notification,omitempty"`
}

// Notification is one message to deliver, as kept in the outbox and in the
// dead-letter list.
type Notification struct {
	ID          string            `json:"id"` // also the Idempotency-Key
	Kind        string            `json:"kind"`
	Receiver    string            `json:"receiver"`
	Integration string            `json:"integration"` // e.g. webhook[0]
	GroupKey    string            `json:"groupKey"`
	GroupLabels alert.Labels      `json:"groupLabels,omitempty"`
	Status      string            `json:"status"`
	Alerts      int               `json:"alerts"`
	CreatedAt   time.Time         `json:"createdAt"`
	Attempts    int               `json:"attempts"`
	LastError   string            `json:"lastError,omitempty"`
	FailedAt    time.Time         `json:"failedAt,omitzero"`
	Target      string            `json:"target"` // URL or command
	Body        []byte            `json:"-"`      // stored after the JSON, see encode
	BodySize    int               `json:"bodySize"`
	ContentType string            `json:"contentType"`
	Headers     map[string]string `json:"headers,omitempty"`
	// Payload is what Body was rendered from; storm control folds payloads.
	Payload *Payload `json:"payload,omitempty"`
	// Folded says storm control holds it back for a summary.
	Folded bool `json:"folded,omitempty"`
	// Dyes are the dye ids (annotation opskit_dye) of its alerts, traced
	// when it is delivered.
	Dyes []string `json:"dyes,omitempty"`
	// Prev is the log entry this notification replaced, restored when it
	// fails for good so that the next flush tries again.
	Prev   *LogEntry `json:"prev,omitempty"`
	LogKey string    `json:"logKey"`

	seq []byte // outbox key
}

// Options tune delivery.
type Options struct {
	ExternalURL    string
	Workers        int           // concurrent deliveries
	RetryInitial   time.Duration // first backoff
	RetryMax       time.Duration // backoff ceiling
	RetryTimeout   time.Duration // give up (dead letter) this long after creation
	SendTimeout    time.Duration // one attempt
	LogRetention   time.Duration // notification log entries kept this long
	DeadLetterKeep int           // newest dead letters kept
	Tick           time.Duration // how often merges and storm summaries are looked at
	// Hops counts the alerts each webhook receiver took, with their
	// latency from the notification's creation (the group's flush); Dye
	// traces the delivery of dyed alerts. Both optional.
	Hops *hop.Set
	Dye  *dye.Tracer
	Now  func() time.Time
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Minute
	}
	if o.RetryTimeout <= 0 {
		o.RetryTimeout = 10 * time.Minute
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 10 * time.Second
	}
	if o.LogRetention <= 0 {
		o.LogRetention = 120 * time.Hour
	}
	if o.DeadLetterKeep <= 0 {
		o.DeadLetterKeep = 1000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
}

// Recorder receives the transitions worth keeping as history.
type Recorder interface {
	Record(kind string, n *Notification, detail string)
}

// Notifier builds, stores and delivers notifications.
type Notifier struct {
	db   *store.DB
	opt  Options
	log  *slog.Logger
	rec  Recorder
	work *queue.Queue[*Notification]
	// delivered takes the outbox keys of delivered notifications, removed
	// in bulk by clearDelivered.
	delivered chan []byte

	mu               sync.RWMutex
	receivers        map[string]*Receiver
	foldedByReceiver map[string][]*Notification

	sent, failed, retried, dead *metrics.Counter
	deduped, folded             *metrics.Counter
}

// New makes a notifier over db for receivers.
func New(db *store.DB, receivers []*Receiver, opt Options, log *slog.Logger, set *metrics.Set, rec Recorder) *Notifier {
	opt.defaults()
	n := &Notifier{
		db: db, opt: opt, log: log, rec: rec,
		work:      queue.New[*Notification](100000, nil),
		delivered: make(chan []byte, 4096),
		sent:      set.NewCounter(`opskit_alarm_notifications_sent_total`),
		failed:    set.NewCounter(`opskit_alarm_notification_attempts_failed_total`),
		retried:   set.NewCounter(`opskit_alarm_notification_retries_total`),
		dead:      set.NewCounter(`opskit_alarm_notifications_dead_lettered_total`),
		deduped:   set.NewCounter(`opskit_alarm_flushes_without_notification_total`),
		folded:    set.NewCounter(`opskit_alarm_notifications_folded_total`),

		foldedByReceiver: map[string][]*Notification{},
	}
	n.SetReceivers(receivers)
	set.NewGauge(`opskit_alarm_outbox_notifications`, func() float64 { return float64(n.work.Len()) })
	return n
}

// SetReceivers replaces the receivers (on reload).
func (n *Notifier) SetReceivers(rs []*Receiver) {
	m := make(map[string]*Receiver, len(rs))
	for _, r := range rs {
		m[r.Name] = r
	}
	n.mu.Lock()
	n.receivers = m
	n.mu.Unlock()
}

// Receivers lists the receiver names.
func (n *Notifier) Receivers() []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]string, 0, len(n.receivers))
	for name := range n.receivers {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// encode stores a notification as a uint32 length, its JSON without the
// body, and the body as is: bodies are most of the bytes written in a
// storm, and JSON would escape or base64 them.
func (nt *Notification) encode() ([]byte, error) {
	nt.BodySize = len(nt.Body)
	meta, err := json.Marshal(nt)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(meta)+len(nt.Body))
	binary.BigEndian.PutUint32(out, uint32(len(meta)))
	out = append(out, meta...)
	return append(out, nt.Body...), nil
}

// decodeNotification reads what encode wrote.
func decodeNotification(v []byte) (*Notification, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("notification record of %d bytes", len(v))
	}
	n := binary.BigEndian.Uint32(v)
	if uint64(n) > uint64(len(v)-4) {
		return nil, fmt.Errorf("notification record: length %d beyond %d bytes", n, len(v)-4)
	}
	nt := &Notification{}
	if err := json.Unmarshal(v[4:4+n], nt); err != nil {
		return nil, err
	}
	nt.Body = append([]byte(nil), v[4+n:]...)
	return nt, nil
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fpSet(fps []alert.Fingerprint) map[alert.Fingerprint]bool {
	m := make(map[alert.Fingerprint]bool, len(fps))
	for _, f := range fps {
		m[f] = true
	}
	return m
}

func subset(set map[alert.Fingerprint]bool, sub []alert.Fingerprint) bool {
	for _, f := range sub {
		if !set[f] {
			return false
		}
	}
	return true
}

// needsUpdate is Alertmanager's dedup rule.
func needsUpdate(prev *LogEntry, firing, resolved []alert.Fingerprint, sendResolved bool, repeat time.Duration, now time.Time) bool {
	if prev == nil {
		return len(firing) > 0
	}
	if !subset(fpSet(prev.Firing), firing) {
		return true
	}
	if len(firing) == 0 {
		// Report "all resolved" only to a receiver that was told something fired.
		return len(prev.Firing) > 0
	}
	if sendResolved && !subset(fpSet(prev.Resolved), resolved) {
		return true
	}
	return !prev.Timestamp.After(now.Add(-repeat))
}

// Notify handles one flush of a group: for every integration of the
// receiver that needs it, a notification is made durable (with its log
// entry) and queued for delivery. It returns once everything is on disk.
func (n *Notifier) Notify(ctx context.Context, g *Group) error {
	n.mu.RLock()
	r := n.receivers[g.Receiver]
	n.mu.RUnlock()
	if r == nil {
		return fmt.Errorf("receiver %q is not defined", g.Receiver)
	}
	now := n.opt.Now()
	var firing, resolved []alert.Fingerprint
	for _, a := range g.Alerts {
		if a.Resolved(now) {
			resolved = append(resolved, a.Fingerprint())
		} else {
			firing = append(firing, a.Fingerprint())
		}
	}
	var queued []*Notification
	err := n.db.Batch(func(tx *store.Tx) error {
		queued = queued[:0]
		for i, in := range r.integrations {
			logKey := g.Receiver + "/" + in.name(i) + "/" + g.GroupKey
			var prev *LogEntry
			if raw := tx.Get(store.NotifyLog, []byte(logKey)); raw != nil {
				prev = &LogEntry{}
				if err := json.Unmarshal(raw, prev); err != nil {
					prev = nil
				}
			}
			if !needsUpdate(prev, firing, resolved, in.sendResolved(), g.RepeatInterval, now) {
				n.deduped.Inc()
				continue
			}
			entry := &LogEntry{Firing: firing, Resolved: resolved, Timestamp: now}
			alerts := g.Alerts
			if !in.sendResolved() {
				alerts = onlyFiring(alerts, now)
			}
			urgent, deferred := alerts, []*alert.Alert(nil)
			if r.merge != nil {
				urgent, deferred = r.merge.split(alerts)
			}
			if len(urgent) > 0 {
				p := BuildPayload(g.Receiver, g.GroupKey, n.opt.ExternalURL, g.GroupLabels, urgent, in.maxAlerts(), now)
				nt, err := n.stage(tx, r, &in, i, KindGroup, p, now)
				if err != nil {
					return err
				}
				nt.GroupLabels, nt.Prev, nt.LogKey = g.GroupLabels, prev, logKey
				nt.Dyes = dyesOf(urgent)
				if err := n.writeOutbox(tx, nt); err != nil {
					return err
				}
				entry.Notification = nt.ID
				queued = append(queued, nt)
			}
			if len(deferred) > 0 {
				if err := r.merge.hold(tx, g.Receiver, in.name(i), deferred, now); err != nil {
					return err
				}
			}
			raw, err := json.Marshal(entry)
			if err != nil {
				return err
			}
			if err := tx.Write(store.NotifyLog, []store.KV{{Key: []byte(logKey), Value: raw}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store notification: %w", err)
	}
	for _, nt := range queued {
		if n.rec != nil {
			n.rec.Record("notification_queued", nt, "")
		}
		if err := n.work.Push(ctx, nt); err != nil {
			return err
		}
	}
	return nil
}

// Kinds of notification.
const (
	KindGroup  = "group"  // one flush of one group
	KindMerged = "merged" // low-priority alerts merged per receiver
	KindStorm  = "storm"  // notifications folded by storm control
)

// stage makes a notification of payload p for integration in (index i)
// with a fresh ID and outbox key; the caller fills in what it knows more
// and writes it with writeOutbox in the same transaction.
func (n *Notifier) stage(tx *store.Tx, r *Receiver, in *integration, i int, kind string, p *Payload, now time.Time) (*Notification, error) {
	body, ctype, err := in.render(p, now)
	if err != nil {
		return nil, fmt.Errorf("receiver %s %s: %w", r.Name, in.name(i), err)
	}
	seq, err := tx.NextSeq(store.Outbox)
	if err != nil {
		return nil, err
	}
	nt := &Notification{
		ID: newID(), Kind: kind, Receiver: r.Name, Integration: in.name(i), GroupKey: p.GroupKey, GroupLabels: p.GroupLabels,
		Status: p.Status, Alerts: len(p.Alerts) + p.TruncatedAlerts, CreatedAt: now, Target: in.target(),
		Body: body, ContentType: ctype, Headers: in.headers(),
		seq: store.TimeKey(now, seq),
	}
	if r.limiter != nil {
		nt.Payload = p // storm control may fold it into a summary
	}
	return nt, nil
}

func (n *Notifier) writeOutbox(tx *store.Tx, nt *Notification) error {
	raw, err := nt.encode()
	if err != nil {
		return err
	}
	return tx.Write(store.Outbox, []store.KV{{Key: nt.seq, Value: raw}})
}

func onlyFiring(alerts []*alert.Alert, now time.Time) []*alert.Alert {
	out := make([]*alert.Alert, 0, len(alerts))
	for _, a := range alerts {
		if !a.Resolved(now) {
			out = append(out, a)
		}
	}
	return out
}

// Run loads the outbox left by a previous run and delivers until ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	var pending []*Notification
	err := n.db.ForEach(store.Outbox, nil, func(k, v []byte) error {
		nt, err := decodeNotification(v)
		if err != nil {
			n.log.Error("unreadable outbox entry dropped", "err", err)
			return nil
		}
		nt.seq = append([]byte(nil), k...)
		if nt.Folded {
			n.foldedByReceiver[nt.Receiver] = append(n.foldedByReceiver[nt.Receiver], nt)
			return nil
		}
		pending = append(pending, nt)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load outbox: %w", err)
	}
	if len(pending) > 0 {
		n.log.Info("resuming undelivered notifications", "count", len(pending))
	}
	go func() {
		for _, nt := range pending {
			if n.work.Push(ctx, nt) != nil {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range n.opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.worker(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.periodic(ctx)
	}()
	clearDone := make(chan struct{})
	go func() {
		defer close(clearDone)
		n.clearDelivered()
	}()
	<-ctx.Done()
	n.work.Close()
	wg.Wait()
	close(n.delivered)
	<-clearDone
	return nil
}

// clearDelivered removes delivered notifications from the outbox, many per
// transaction. A crash between delivery and removal resends a notification
// with the same Idempotency-Key, as a crash between the receiver's answer
// and any removal would.
func (n *Notifier) clearDelivered() {
	var kvs []store.KV
	flush := func() {
		if len(kvs) == 0 {
			return
		}
		if err := n.db.Write(store.Outbox, kvs); err != nil {
			n.log.Error("outbox delete failed; delivered notifications may be sent again after a restart", "count", len(kvs), "err", err)
		}
		kvs = kvs[:0]
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case k, ok := <-n.delivered:
			if !ok {
				flush()
				return
			}
			kvs = append(kvs, store.KV{Key: k})
			if len(kvs) >= 1000 {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// periodic sends merged messages when each receiver's merge interval has
// passed and storm summaries when the limits allow.
func (n *Notifier) periodic(ctx context.Context) {
	tick := time.NewTicker(n.opt.Tick)
	defer tick.Stop()
	lastMerge := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := n.opt.Now()
		n.mu.RLock()
		rs := make([]*Receiver, 0, len(n.receivers))
		for _, r := range n.receivers {
			rs = append(rs, r)
		}
		n.mu.RUnlock()
		for _, r := range rs {
			if r.merge != nil {
				if last, ok := lastMerge[r.Name]; !ok {
					lastMerge[r.Name] = now
				} else if now.Sub(last) >= r.merge.cfg.Interval {
					lastMerge[r.Name] = now
					if err := n.flushMerged(ctx, r); err != nil && ctx.Err() == nil {
						n.log.Error("merged notification failed", "receiver", r.Name, "err", err)
					}
				}
			}
			if err := n.flushFolded(ctx, r); err != nil && ctx.Err() == nil {
				n.log.Error("storm summary failed", "receiver", r.Name, "err", err)
			}
		}
	}
}

func (n *Notifier) worker(ctx context.Context) {
	batch := make([]*Notification, 0, 1)
	for {
		var err error
		batch, err = n.work.PopBatch(ctx, batch, 1)
		if err != nil || ctx.Err() != nil {
			return
		}
		for _, nt := range batch {
			n.attempt(ctx, nt)
		}
	}
}

// attempt delivers nt once and then removes it, schedules a retry, or
// dead-letters it.
func (n *Notifier) attempt(ctx context.Context, nt *Notification) {
	n.mu.RLock()
	r := n.receivers[nt.Receiver]
	n.mu.RUnlock()
	var err error
	permanent := false
	if r == nil {
		err, permanent = fmt.Errorf("receiver %q no longer defined", nt.Receiver), true
	} else if nt.Kind != KindStorm && nt.Attempts == 0 && r.limiter != nil && !r.limiter.AllowN(n.opt.Now(), 1) {
		n.fold(nt)
		return
	} else {
		actx, cancel := context.WithTimeout(ctx, n.opt.SendTimeout)
		err = r.deliver(actx, nt)
		cancel()
		var pe *PermanentError
		permanent = errors.As(err, &pe)
	}
	if ctx.Err() != nil {
		return // stopping: the outbox keeps it for the next run
	}
	nt.Attempts++
	now := n.opt.Now()
	if err == nil {
		n.delivered <- nt.seq
		n.sent.Inc()
		n.acked(nt, now)
		if n.rec != nil {
			n.rec.Record("notified", nt, "")
		}
		return
	}
	n.failed.Inc()
	if strings.Contains(nt.Target, "://") {
		n.opt.Hops.To(hop.Addr(nt.Target)).Failed()
	}
	nt.LastError = err.Error()
	backoff := n.opt.RetryInitial << min(nt.Attempts-1, 20)
	if backoff > n.opt.RetryMax || backoff <= 0 {
		backoff = n.opt.RetryMax
	}
	if permanent || now.Add(backoff).After(nt.CreatedAt.Add(n.opt.RetryTimeout)) {
		n.deadLetter(nt, now)
		return
	}
	n.log.Warn("notification failed; will retry", "receiver", nt.Receiver, "integration", nt.Integration,
		"group", nt.GroupKey, "attempt", nt.Attempts, "retry_in", backoff, "err", err)
	raw, _ := nt.encode()
	if werr := n.db.Write(store.Outbox, []store.KV{{Key: nt.seq, Value: raw}}); werr != nil {
		n.log.Error("outbox update failed", "id", nt.ID, "err", werr)
	}
	n.retried.Inc()
	time.AfterFunc(backoff, func() {
		if ctx.Err() == nil {
			n.work.Push(ctx, nt)
		}
	})
}

// acked counts a delivered notification's alerts in the hop statistics of
// its webhook and traces its dyes.
func (n *Notifier) acked(nt *Notification, now time.Time) {
	took := max(0, now.Sub(nt.CreatedAt))
	// A command's line can carry credentials: traces name only its kind.
	target := "command"
	if strings.Contains(nt.Target, "://") {
		target = hop.Addr(nt.Target)
		n.opt.Hops.To(target).Acked(nt.Alerts, took*time.Duration(nt.Alerts))
	}
	for _, id := range nt.Dyes {
		n.opt.Dye.Hop(id, "notify "+nt.Receiver+" "+target, fmt.Sprintf("%s %s group %s (%d alerts)", nt.Kind, nt.Status, nt.GroupKey, nt.Alerts), took)
	}
}

// dyesOf lists the distinct dye ids among alerts' annotations.
func dyesOf(alerts []*alert.Alert) []string {
	var ids []string
	for _, a := range alerts {
		if id := a.Annotations[dye.Annotation]; id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// AlertSummary describes an alert in a trace record.
func AlertSummary(a *alert.Alert) string {
	return a.Labels["alertname"] + " " + a.Labels.String()
}

func (n *Notifier) deadLetter(nt *Notification, now time.Time) {
	nt.FailedAt = now
	n.dead.Inc()
	n.log.Error("notification failed for good; moved to the dead-letter list", "receiver", nt.Receiver,
		"integration", nt.Integration, "group", nt.GroupKey, "attempts", nt.Attempts, "err", nt.LastError)
	raw, _ := nt.encode()
	err := n.db.Batch(func(tx *store.Tx) error {
		if err := tx.Write(store.Outbox, []store.KV{{Key: nt.seq}}); err != nil {
			return err
		}
		if err := tx.Write(store.DeadLetters, []store.KV{{Key: nt.seq, Value: raw}}); err != nil {
			return err
		}
		// Restore the log as it was, so the next flush of the group tries again.
		cur := tx.Get(store.NotifyLog, []byte(nt.LogKey))
		var e LogEntry
		if cur != nil && json.Unmarshal(cur, &e) == nil && e.Notification == nt.ID {
			var prev []byte
			if nt.Prev != nil {
				prev, _ = json.Marshal(nt.Prev)
			}
			return tx.Write(store.NotifyLog, []store.KV{{Key: []byte(nt.LogKey), Value: prev}})
		}
		return nil
	})
	if err != nil {
		n.log.Error("dead-letter write failed", "id", nt.ID, "err", err)
	}
	if n.rec != nil {
		n.rec.Record("dead_lettered", nt, nt.LastError)
	}
}

// DeadLetters returns the dead letters, oldest first.
func (n *Notifier) DeadLetters() ([]*Notification, error) {
	var out []*Notification
	err := n.db.ForEach(store.DeadLetters, nil, func(k, v []byte) error {
		nt, err := decodeNotification(v)
		if err != nil {
			return err
		}
		out = append(out, nt)
		return nil
	})
	return out, err
}

// Pending returns the notifications not yet delivered, oldest first.
func (n *Notifier) Pending() ([]*Notification, error) {
	var out []*Notification
	err := n.db.ForEach(store.Outbox, nil, func(k, v []byte) error {
		nt, err := decodeNotification(v)
		if err != nil {
			return err
		}
		out = append(out, nt)
		return nil
	})
	return out, err
}

// GC drops notification log entries older than the retention and dead
// letters beyond the newest DeadLetterKeep.
func (n *Notifier) GC() error {
	cutoff := n.opt.Now().Add(-n.opt.LogRetention)
	var kvs []store.KV
	err := n.db.ForEach(store.NotifyLog, nil, func(k, v []byte) error {
		var e LogEntry
		if json.Unmarshal(v, &e) != nil || e.Timestamp.Before(cutoff) {
			kvs = append(kvs, store.KV{Key: append([]byte(nil), k...)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := n.db.Write(store.NotifyLog, kvs); err != nil {
		return err
	}
	count, err := n.db.Count(store.DeadLetters)
	if err != nil || count <= n.opt.DeadLetterKeep {
		return err
	}
	kvs = kvs[:0]
	extra := count - n.opt.DeadLetterKeep
	n.db.ForEach(store.DeadLetters, nil, func(k, v []byte) error {
		if len(kvs) >= extra {
			return store.ErrStop
		}
		kvs = append(kvs, store.KV{Key: append([]byte(nil), k...)})
		return nil
	})
	return n.db.Write(store.DeadLetters, kvs)
}

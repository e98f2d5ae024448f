// Package alert is alarm's alert model and the decoder of Alertmanager v2
// postable alerts (the body of POST /api/v2/alerts).
package alert

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Fingerprint identifies an alert by its label set.
type Fingerprint uint64

// String is the 16-digit hex form Alertmanager's API uses.
func (f Fingerprint) String() string { return fmt.Sprintf("%016x", uint64(f)) }

// ParseFingerprint reads the String form.
func ParseFingerprint(s string) (Fingerprint, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	return Fingerprint(v), err
}

// Labels is an alert's label set (or annotations).
type Labels map[string]string

// Fingerprint hashes the sorted pairs (FNV-1a with separators that cannot
// occur in UTF-8), so equal sets have equal fingerprints.
func (ls Labels) Fingerprint() Fingerprint {
	h := fnv.New64a()
	for _, n := range ls.Names() {
		h.Write([]byte(n))
		h.Write([]byte{0xff})
		h.Write([]byte(ls[n]))
		h.Write([]byte{0xff})
	}
	return Fingerprint(h.Sum64())
}

// Names returns the label names sorted.
func (ls Labels) Names() []string {
	names := make([]string, 0, len(ls))
	for n := range ls {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// String renders {a="b", c="d"} sorted by name, as Alertmanager writes
// label sets in group keys.
func (ls Labels) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range ls.Names() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(ls[n]))
	}
	b.WriteByte('}')
	return b.String()
}

// Clone copies the set.
func (ls Labels) Clone() Labels {
	out := make(Labels, len(ls))
	for k, v := range ls {
		out[k] = v
	}
	return out
}

// Alert is one alert as alarm keeps it.
type Alert struct {
	Labels       Labels    `json:"labels"`
	Annotations  Labels    `json:"annotations"`
	StartsAt     time.Time `json:"startsAt"`
	EndsAt       time.Time `json:"endsAt"`
	GeneratorURL string    `json:"generatorURL,omitempty"`
	UpdatedAt    time.Time `json:"updatedAt"`
	// Timeout says EndsAt was not given by the sender but set to
	// receipt + resolve_timeout: a later explicit end time wins over it.
	Timeout bool `json:"timeout,omitempty"`
}

// Fingerprint is the fingerprint of the labels.
func (a *Alert) Fingerprint() Fingerprint { return a.Labels.Fingerprint() }

// Resolved reports whether the alert has ended at now.
func (a *Alert) Resolved(now time.Time) bool {
	return !a.EndsAt.IsZero() && !a.EndsAt.After(now)
}

// Merge combines the stored alert old with a new report of the same
// labels, as Alertmanager does: the report received last gives labels,
// annotations and URL; the earliest start wins; an explicit end time is not
// replaced by a timeout one.
func Merge(old, upd *Alert, now time.Time) *Alert {
	overlap := (upd.EndsAt.After(old.StartsAt) && upd.EndsAt.Before(old.EndsAt)) ||
		(upd.StartsAt.After(old.StartsAt) && upd.StartsAt.Before(old.EndsAt))
	if !overlap {
		return upd
	}
	a, o := old, upd
	if o.UpdatedAt.Before(a.UpdatedAt) {
		a, o = o, a
	}
	res := *o
	if a.StartsAt.Before(o.StartsAt) {
		res.StartsAt = a.StartsAt
	}
	if o.Resolved(now) {
		if a.Resolved(now) && a.EndsAt.After(o.EndsAt) {
			res.EndsAt = a.EndsAt
		}
	} else if a.EndsAt.After(o.EndsAt) && !a.Timeout {
		res.EndsAt = a.EndsAt
		res.Timeout = false
	}
	return &res
}

// Postable is one element of a POST /api/v2/alerts body.
type Postable struct {
	Labels       Labels    `json:"labels"`
	Annotations  Labels    `json:"annotations"`
	StartsAt     time.Time `json:"startsAt"`
	EndsAt       time.Time `json:"endsAt"`
	GeneratorURL string    `json:"generatorURL"`
}

// Limits bound one alert so a bad sender cannot exhaust memory.
type Limits struct {
	MaxLabels     int // labels + annotations per alert
	MaxNameBytes  int
	MaxValueBytes int
}

// DefaultLimits are generous for real alerts.
var DefaultLimits = Limits{MaxLabels: 128, MaxNameBytes: 256, MaxValueBytes: 16 << 10}

// ItemError is the reason one alert of a batch was refused.
type ItemError struct {
	Index int // position in the posted array
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("alert %d: %v", e.Index, e.Err) }
func (e *ItemError) Unwrap() error { return e.Err }

// ErrBody is wrapped when the body is not a JSON array of alerts at all.
var ErrBody = errors.New("body is not a JSON array of alerts")

// Decode reads a POST /api/v2/alerts body. It returns the valid alerts,
// completed as Alertmanager does (no startsAt = now; no endsAt = now +
// resolveTimeout, marked Timeout), and one ItemError per refused alert. A
// body that is not a JSON array fails as a whole with ErrBody.
func Decode(body []byte, now time.Time, resolveTimeout time.Duration, lim Limits) ([]*Alert, []*ItemError, error) {
	// Fast path: the whole array decodes; only validation can refuse items.
	var ps []Postable
	if err := json.Unmarshal(body, &ps); err == nil && ps != nil {
		out := make([]*Alert, 0, len(ps))
		var bad []*ItemError
		for i := range ps {
			a, err := complete(&ps[i], now, resolveTimeout, lim)
			if err != nil {
				bad = append(bad, &ItemError{Index: i, Err: err})
				continue
			}
			out = append(out, a)
		}
		return out, bad, nil
	}
	// Some element does not decode: go item by item to name it.
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBody, err)
	}
	out := make([]*Alert, 0, len(raw))
	var bad []*ItemError
	for i, r := range raw {
		a, err := decodeOne(r, now, resolveTimeout, lim)
		if err != nil {
			bad = append(bad, &ItemError{Index: i, Err: err})
			continue
		}
		out = append(out, a)
	}
	return out, bad, nil
}

func decodeOne(r json.RawMessage, now time.Time, resolveTimeout time.Duration, lim Limits) (*Alert, error) {
	var p Postable
	if err := json.Unmarshal(r, &p); err != nil {
		return nil, err
	}
	return complete(&p, now, resolveTimeout, lim)
}

// complete validates a decoded alert and fills in the missing times.
func complete(p *Postable, now time.Time, resolveTimeout time.Duration, lim Limits) (*Alert, error) {
	if len(p.Labels) == 0 {
		return nil, errors.New("at least one label pair required")
	}
	if lim.MaxLabels > 0 && len(p.Labels)+len(p.Annotations) > lim.MaxLabels {
		return nil, fmt.Errorf("%d labels and annotations, limit %d", len(p.Labels)+len(p.Annotations), lim.MaxLabels)
	}
	if err := validate("label", p.Labels, lim); err != nil {
		return nil, err
	}
	if err := validate("annotation", p.Annotations, lim); err != nil {
		return nil, err
	}
	a := &Alert{
		Labels: p.Labels, Annotations: p.Annotations, GeneratorURL: p.GeneratorURL,
		StartsAt: p.StartsAt, EndsAt: p.EndsAt, UpdatedAt: now,
	}
	if a.Annotations == nil {
		a.Annotations = Labels{}
	}
	if a.StartsAt.IsZero() {
		if a.EndsAt.IsZero() {
			a.StartsAt = now
		} else {
			a.StartsAt = a.EndsAt
		}
	}
	if a.EndsAt.IsZero() {
		a.Timeout = true
		a.EndsAt = now.Add(resolveTimeout)
	}
	if a.EndsAt.Before(a.StartsAt) {
		return nil, errors.New("start time must be before end time")
	}
	return a, nil
}

func validate(kind string, ls Labels, lim Limits) error {
	for n, v := range ls {
		if n == "" {
			return fmt.Errorf("empty %s name", kind)
		}
		if !utf8.ValidString(n) || !utf8.ValidString(v) {
			return fmt.Errorf("%s %q: not valid UTF-8", kind, n)
		}
		if lim.MaxNameBytes > 0 && len(n) > lim.MaxNameBytes {
			return fmt.Errorf("%s name of %d bytes, limit %d", kind, len(n), lim.MaxNameBytes)
		}
		if lim.MaxValueBytes > 0 && len(v) > lim.MaxValueBytes {
			return fmt.Errorf("%s %q: value of %d bytes, limit %d", kind, n, len(v), lim.MaxValueBytes)
		}
	}
	return nil
}

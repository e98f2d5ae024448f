// Package metric is opskit's shared model of a metric point: a series
// identity (metric name plus sorted labels), a timestamp in seconds, a value,
// the reporting step and the open-falcon counter type.
//
// The open-falcon "endpoint" is the label "endpoint", its tags are labels and
// the metric name is the label "__name__", so one model serves open-falcon,
// Graphite, StatsD and Prometheus input alike.
package metric

import (
	"fmt"
	"sort"
	"strings"
)

// NameLabel is the label holding the metric name, as in Prometheus.
const NameLabel = "__name__"

// EndpointLabel is the label holding the open-falcon endpoint (the host).
const EndpointLabel = "endpoint"

// CounterType says how a raw value becomes the stored value.
type CounterType uint8

const (
	// Gauge values are stored as they are.
	Gauge CounterType = iota
	// Counter values are monotonic totals; storage keeps their per-second
	// rate, and a decrease (a reset) gives an unknown slot.
	Counter
	// Derive is like Counter; open-falcon keeps both names.
	Derive
)

// String returns the open-falcon spelling.
func (t CounterType) String() string {
	switch t {
	case Gauge:
		return "GAUGE"
	case Counter:
		return "COUNTER"
	case Derive:
		return "DERIVE"
	}
	return fmt.Sprintf("CounterType(%d)", uint8(t))
}

// IsRate reports whether values of this type are turned into rates.
func (t CounterType) IsRate() bool { return t == Counter || t == Derive }

// ParseCounterType accepts GAUGE, COUNTER and DERIVE (any case); an empty
// string is GAUGE, as open-falcon's agent defaults it.
func ParseCounterType(s string) (CounterType, error) {
	switch strings.ToUpper(s) {
	case "", "GAUGE":
		return Gauge, nil
	case "COUNTER":
		return Counter, nil
	case "DERIVE":
		return Derive, nil
	}
	return Gauge, fmt.Errorf("unknown counterType %q (want GAUGE, COUNTER or DERIVE)", s)
}

// Label is one name=value pair.
type Label struct {
	Name  string
	Value string
}

// Labels is a label set sorted by name with unique names. It includes the
// metric name as NameLabel. Build one with New or a Builder, never by hand.
type Labels []Label

// New returns the sorted label set of the given pairs; later duplicates of a
// name win. Empty values are dropped, as Prometheus treats them as absent.
func New(pairs ...Label) Labels {
	ls := make(Labels, 0, len(pairs))
	for _, p := range pairs {
		if p.Value == "" {
			continue
		}
		ls = append(ls, p)
	}
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
	// Keep the last of equal names.
	out := ls[:0]
	for i, l := range ls {
		if i+1 < len(ls) && ls[i+1].Name == l.Name {
			continue
		}
		out = append(out, l)
	}
	return out
}

// Get returns the value of name, or "" when absent.
func (ls Labels) Get(name string) string {
	i := sort.Search(len(ls), func(i int) bool { return ls[i].Name >= name })
	if i < len(ls) && ls[i].Name == name {
		return ls[i].Value
	}
	return ""
}

// Name returns the metric name.
func (ls Labels) Name() string { return ls.Get(NameLabel) }

// String renders the set as name{k="v",...} for logs and errors.
func (ls Labels) String() string {
	var b strings.Builder
	b.WriteString(ls.Name())
	b.WriteByte('{')
	first := true
	for _, l := range ls {
		if l.Name == NameLabel {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(l.Name)
		b.WriteString(`="`)
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(l.Value, `\`, `\\`), `"`, `\"`))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// AppendKey appends the canonical binary identity of the series to dst: each
// name and value followed by a 0xff byte, which cannot occur in valid UTF-8.
// Two label sets are the same series exactly when their keys are equal.
func (ls Labels) AppendKey(dst []byte) []byte {
	for _, l := range ls {
		dst = append(dst, l.Name...)
		dst = append(dst, 0xff)
		dst = append(dst, l.Value...)
		dst = append(dst, 0xff)
	}
	return dst
}

// Key returns AppendKey as a string, usable as a map key.
func (ls Labels) Key() string { return string(ls.AppendKey(nil)) }

// Equal reports whether both sets hold the same labels.
func (ls Labels) Equal(o Labels) bool {
	if len(ls) != len(o) {
		return false
	}
	for i := range ls {
		if ls[i] != o[i] {
			return false
		}
	}
	return true
}

// Point is one sample of one series as it enters the write path.
type Point struct {
	Labels Labels
	// Time is the sample time in Unix seconds.
	Time int64
	// Value is the raw value: for Counter and Derive, the running total.
	Value float64
	// Step is the reporting interval in seconds; 0 means "use the storage
	// schema's finest step" (Graphite and remote_write carry none).
	Step int32
	Type CounterType
}

// ParseTags parses open-falcon tags "k=v,k2=v2" into labels appended to dst.
// Spaces around names and values are trimmed, as open-falcon does.
func ParseTags(dst []Label, s string) ([]Label, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return dst, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return dst, fmt.Errorf("bad tag %q: want key=value", part)
		}
		dst = append(dst, Label{Name: k, Value: v})
	}
	return dst, nil
}

// FormatTags renders the labels other than the name and endpoint as
// open-falcon tags "k=v,k2=v2", sorted by name.
func (ls Labels) FormatTags() string {
	var b strings.Builder
	for _, l := range ls {
		if l.Name == NameLabel || l.Name == EndpointLabel {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
	}
	return b.String()
}

package route

import (
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a YAML duration in Prometheus's notation: a sequence of
// number+unit with units ms, s, m, h, d (24h), w (7d), y (365d), e.g. "1d12h".
type Duration time.Duration

// UnmarshalYAML reads Prometheus's notation.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the Go form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// ParseDuration reads Prometheus's duration notation; Go's own ("1h30m0s",
// "1.5s") is accepted too.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	units := map[string]time.Duration{
		"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour,
		"d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour,
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			// Not Prometheus's notation; Go's may still read it.
			return time.ParseDuration(s)
		}
		num, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		rest = rest[i:]
		j := 0
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		unit, ok := units[rest[:j]]
		if !ok {
			if d, err := time.ParseDuration(s); err == nil {
				return d, nil
			}
			return 0, fmt.Errorf("duration %q: unknown unit %q (ms, s, m, h, d, w, y)", s, rest[:j])
		}
		if num > int64(1<<62)/int64(unit) {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += time.Duration(num) * unit
		rest = rest[j:]
	}
	return total, nil
}

// Package statsd is collector's StatsD intake: UDP datagrams of
// "name:value|type[|@rate][|#tag:value,...]" lines (counters c, gauges g
// with +/- deltas, timers ms, histograms h and distributions d, sets s),
// aggregated per interval into points (see Aggregator for the names).
package statsd

import (
	"bytes"
	"errors"
	"math"
	"strconv"
)

// Proto is the "proto" label of this intake's counters.
const Proto = "statsd"

// Type is a StatsD metric type.
type Type byte

// The metric types. Histograms ("h") and distributions ("d") are timers.
const (
	Counter Type = 'c'
	Gauge   Type = 'g'
	Timer   Type = 't'
	Set     Type = 's'
)

// Sample is one parsed line. Its byte slices point into the line.
type Sample struct {
	Name  []byte
	Type  Type
	Value float64
	// Delta is true for a gauge value written with a leading + or -.
	Delta bool
	// SetMember is the raw value of a set sample.
	SetMember []byte
	// Rate is the sample rate in (0, 1]; 1 when not given.
	Rate float64
	// Tags is the raw DogStatsD tag list ("k:v,k2:v2"), nil if none.
	Tags []byte
}

// Parse errors; their text is the rejection reason word.
var (
	ErrNoValue   = errors.New("bad_line")
	ErrBadName   = errors.New("empty_metric")
	ErrBadType   = errors.New("bad_type")
	ErrBadValue  = errors.New("bad_value")
	ErrBadRate   = errors.New("bad_rate")
	ErrBadTags   = errors.New("bad_tags")
	ErrBadLength = errors.New("too_long")
)

// MaxLine bounds one line; a longer one is refused.
const MaxLine = 4096

// ParseLine parses one line without its newline. It does not allocate.
func ParseLine(line []byte, s *Sample) error {
	*s = Sample{Rate: 1}
	if len(line) > MaxLine {
		return ErrBadLength
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return ErrNoValue
	}
	s.Name = line[:colon]
	if len(s.Name) == 0 {
		return ErrBadName
	}
	rest := line[colon+1:]
	bar := bytes.IndexByte(rest, '|')
	if bar < 0 {
		return ErrNoValue
	}
	value := rest[:bar]
	rest = rest[bar+1:]
	typ := rest
	if bar = bytes.IndexByte(rest, '|'); bar >= 0 {
		typ, rest = rest[:bar], rest[bar+1:]
	} else {
		rest = nil
	}
	switch string(typ) {
	case "c":
		s.Type = Counter
	case "g":
		s.Type = Gauge
	case "ms", "h", "d":
		s.Type = Timer
	case "s":
		s.Type = Set
	default:
		return ErrBadType
	}
	for len(rest) > 0 {
		field := rest
		if bar = bytes.IndexByte(rest, '|'); bar >= 0 {
			field, rest = rest[:bar], rest[bar+1:]
		} else {
			rest = nil
		}
		switch {
		case len(field) > 1 && field[0] == '@':
			r, err := strconv.ParseFloat(string(field[1:]), 64)
			if err != nil || !(r > 0 && r <= 1) {
				return ErrBadRate
			}
			s.Rate = r
		case len(field) > 0 && field[0] == '#':
			s.Tags = field[1:]
			if len(s.Tags) == 0 {
				return ErrBadTags
			}
		case len(field) > 1 && field[0] == 'c' && field[1] == ':':
			// A DogStatsD container id: not a series property.
		case len(field) > 1 && field[0] == 'T':
			// A DogStatsD client timestamp: aggregation uses arrival time.
		default:
			return ErrBadTags
		}
	}
	if len(value) == 0 {
		return ErrBadValue
	}
	if s.Type == Set {
		s.SetMember = value
		return nil
	}
	if s.Type == Gauge && (value[0] == '+' || value[0] == '-') {
		s.Delta = true
	}
	v, err := strconv.ParseFloat(string(value), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return ErrBadValue
	}
	s.Value = v
	return nil
}

// Lines calls fn with every non-empty line of a datagram.
func Lines(datagram []byte, fn func(line []byte)) {
	for len(datagram) > 0 {
		line := datagram
		if i := bytes.IndexByte(datagram, '\n'); i >= 0 {
			line, datagram = datagram[:i], datagram[i+1:]
		} else {
			datagram = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > 0 {
			fn(line)
		}
	}
}

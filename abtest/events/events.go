// Package events defines what abtest takes in: exposures (a unit saw a
// variant), conversions and metric values, and their JSON form.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Kind is an event's type.
type Kind uint8

// Kinds of events.
const (
	Exposure Kind = iota + 1
	Conversion
	Metric
)

var kindNames = map[Kind]string{Exposure: "exposure", Conversion: "conversion", Metric: "metric"}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind reads "exposure", "conversion" or "metric".
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if name == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown event type %q (exposure, conversion, metric)", s)
}

// Limits on field sizes, so one event cannot be arbitrarily large.
const (
	MaxUnitLen = 256
	MaxNameLen = 128
)

// Event is one exposure, conversion or metric value of a unit in an
// experiment. Exposures carry the variant; conversions and metrics carry a
// name (and a value, 1 for a conversion when omitted).
type Event struct {
	Kind       Kind
	Unit       string
	Experiment string
	Variant    string
	Name       string
	Value      float64
	Time       time.Time
	Forced     bool // a whitelisted exposure, left out of reports
}

type wire struct {
	Type       string   `json:"type"`
	Unit       string   `json:"unit"`
	Experiment string   `json:"experiment"`
	Variant    string   `json:"variant,omitempty"`
	Name       string   `json:"name,omitempty"`
	Value      *float64 `json:"value,omitempty"`
	Time       string   `json:"time,omitempty"`
	Forced     bool     `json:"forced,omitempty"`
}

// MarshalJSON writes the wire form.
func (e Event) MarshalJSON() ([]byte, error) {
	w := wire{Type: e.Kind.String(), Unit: e.Unit, Experiment: e.Experiment, Variant: e.Variant, Name: e.Name, Forced: e.Forced}
	if e.Kind != Exposure {
		v := e.Value
		w.Value = &v
	}
	if !e.Time.IsZero() {
		w.Time = e.Time.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the wire form: {"type": "conversion", "unit": "u1",
// "experiment": "e", "name": "purchase", "value": 1, "time": RFC 3339 or
// Unix seconds}. A missing time is left zero (the receiver stamps it).
func (e *Event) UnmarshalJSON(b []byte) error {
	var raw struct {
		wire
		Time json.RawMessage `json:"time"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	k, err := ParseKind(raw.Type)
	if err != nil {
		return err
	}
	*e = Event{Kind: k, Unit: raw.Unit, Experiment: raw.Experiment, Variant: raw.Variant, Name: raw.Name, Forced: raw.Forced}
	if raw.Value != nil {
		e.Value = *raw.Value
	} else if k == Conversion {
		e.Value = 1
	}
	if len(raw.Time) > 0 && string(raw.Time) != "null" {
		var s string
		var secs float64
		switch {
		case json.Unmarshal(raw.Time, &s) == nil:
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return fmt.Errorf("time: %w", err)
			}
			e.Time = t
		case json.Unmarshal(raw.Time, &secs) == nil:
			whole, frac := math.Modf(secs)
			e.Time = time.Unix(int64(whole), int64(frac*1e9))
		default:
			return errors.New("time must be RFC 3339 or Unix seconds")
		}
	}
	return e.Validate()
}

// Validate checks the fields a stored event needs.
func (e *Event) Validate() error {
	switch {
	case kindNames[e.Kind] == "":
		return fmt.Errorf("unknown event type %d", e.Kind)
	case e.Unit == "" || len(e.Unit) > MaxUnitLen:
		return fmt.Errorf("unit must be 1 to %d bytes", MaxUnitLen)
	case e.Experiment == "" || len(e.Experiment) > MaxNameLen:
		return fmt.Errorf("experiment must be 1 to %d bytes", MaxNameLen)
	case e.Kind == Exposure && (e.Variant == "" || len(e.Variant) > MaxNameLen):
		return fmt.Errorf("an exposure needs a variant of 1 to %d bytes", MaxNameLen)
	case e.Kind != Exposure && (e.Name == "" || len(e.Name) > MaxNameLen):
		return fmt.Errorf("a %s needs a name of 1 to %d bytes", e.Kind, MaxNameLen)
	case math.IsNaN(e.Value) || math.IsInf(e.Value, 0):
		return errors.New("value must be a finite number")
	}
	return nil
}

package stats

import (
	"encoding/json"
	"math"
	"strconv"
)

// JSONFloat writes NaN and infinities as null (JSON has no such numbers),
// as the tests give them when a sample is too small.
type JSONFloat float64

// MarshalJSON writes the number, or null.
func (f JSONFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(f), 'g', -1, 64), nil
}

// UnmarshalJSON reads a number, or null as NaN.
func (f *JSONFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = JSONFloat(math.NaN())
		return nil
	}
	var v float64
	err := json.Unmarshal(b, &v)
	*f = JSONFloat(v)
	return err
}

// Pair converts an interval.
func Pair(p [2]float64) [2]JSONFloat { return [2]JSONFloat{JSONFloat(p[0]), JSONFloat(p[1])} }

type comparisonJSON struct {
	Diff     JSONFloat    `json:"diff"`
	DiffCI   [2]JSONFloat `json:"diff_ci"`
	Relative JSONFloat    `json:"relative"`
	RelCI    [2]JSONFloat `json:"relative_ci"`
	Stat     JSONFloat    `json:"stat"`
	DF       JSONFloat    `json:"df,omitempty"`
	PValue   JSONFloat    `json:"p_value"`
}

// MarshalJSON writes the comparison with null for undefined values.
func (c Comparison) MarshalJSON() ([]byte, error) {
	return json.Marshal(comparisonJSON{JSONFloat(c.Diff), Pair(c.DiffCI), JSONFloat(c.Relative), Pair(c.RelCI),
		JSONFloat(c.Stat), JSONFloat(c.DF), JSONFloat(c.PValue)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *Comparison) UnmarshalJSON(b []byte) error {
	var j comparisonJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = Comparison{float64(j.Diff), [2]float64{float64(j.DiffCI[0]), float64(j.DiffCI[1])}, float64(j.Relative),
		[2]float64{float64(j.RelCI[0]), float64(j.RelCI[1])}, float64(j.Stat), float64(j.DF), float64(j.PValue)}
	return nil
}

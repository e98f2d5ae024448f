package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// targetSummary holds the medians of one target's runs.
type targetSummary struct {
	Target         string
	Mode           string
	StoredBy       string
	Runs           int
	Failed         int
	Accepted       float64 // median accepted points/s over successful runs
	Stored         float64 // median stored points/s over successful runs
	Load1          float64 // median load average at the start of the successful runs
	AcceptedValues []float64
	StoredValues   []float64
	LoadValues     []float64
}

// readReports reads loadgen's JSON lines; blank lines are skipped.
func readReports(r io.Reader) ([]report, error) {
	var out []report
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rep report
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if rep.Target == "" {
			rep.Target = rep.Mode
		}
		out = append(out, rep)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading reports: %w", err)
	}
	return out, nil
}

// summarize groups reports by target, in order of first appearance, and
// takes the medians of the runs that succeeded.
func summarize(reports []report) []targetSummary {
	var order []string
	byTarget := map[string]*targetSummary{}
	for _, rep := range reports {
		s, ok := byTarget[rep.Target]
		if !ok {
			s = &targetSummary{Target: rep.Target, Mode: rep.Mode, StoredBy: rep.StoredBy}
			byTarget[rep.Target] = s
			order = append(order, rep.Target)
		}
		s.Runs++
		if rep.Error != "" {
			s.Failed++
			continue
		}
		s.LoadValues = append(s.LoadValues, rep.Load1)
		s.AcceptedValues = append(s.AcceptedValues, rep.AcceptedPointsPerSec)
		s.StoredValues = append(s.StoredValues, rep.PointsPerSec)
	}
	out := make([]targetSummary, 0, len(order))
	for _, name := range order {
		s := byTarget[name]
		s.Accepted = median(s.AcceptedValues)
		s.Stored = median(s.StoredValues)
		s.Load1 = median(s.LoadValues)
		out = append(out, *s)
	}
	return out
}

// median of values; the mean of the middle two for an even count, 0 for none.
func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Clone(values)
	slices.Sort(v)
	mid := len(v) / 2
	if len(v)%2 == 1 {
		return v[mid]
	}
	return (v[mid-1] + v[mid]) / 2
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// writeSummary prints a Markdown table of medians, then the ratio of every
// transfer target to every other target, stored to stored and accepted to
// accepted.
func writeSummary(w io.Writer, sums []targetSummary) error {
	b := &strings.Builder{}
	fmt.Fprintln(b, "| target | mode | runs ok | accepted points/s (median) | stored points/s (median) | stored means | load avg at start (median) |")
	fmt.Fprintln(b, "|---|---|---|---:|---:|---|---:|")
	for _, s := range sums {
		fmt.Fprintf(b, "| %s | %s | %d/%d | %.0f | %.0f | %s | %.1f |\n", s.Target, s.Mode, s.Runs-s.Failed, s.Runs, s.Accepted, s.Stored, s.StoredBy, s.Load1)
	}
	var ratios []string
	for _, t := range sums {
		if !strings.HasPrefix(t.Target, "transfer") {
			continue
		}
		for _, o := range sums {
			if strings.HasPrefix(o.Target, "transfer") {
				continue
			}
			ratios = append(ratios, fmt.Sprintf("| %s / %s | %.2f× | %.2f× |", t.Target, o.Target, ratio(t.Accepted, o.Accepted), ratio(t.Stored, o.Stored)))
		}
	}
	if len(ratios) > 0 {
		fmt.Fprintln(b)
		fmt.Fprintln(b, "| ratio | accepted | stored |")
		fmt.Fprintln(b, "|---|---:|---:|")
		for _, r := range ratios {
			fmt.Fprintln(b, r)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

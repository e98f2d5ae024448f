package main

import (
	"fmt"
	"strconv"
)

// Workload is the deterministic set of points every target receives: Series
// series of Points points each, one every Step seconds from Start. Series i
// has metric "bench.m<i%100>", endpoint "host-<i/100>" and the tag
// "group=g<i%10>", so names look like a real open-falcon fleet: many hosts
// sharing a few metric names.
type Workload struct {
	Series int
	Points int
	Start  int64 // Unix seconds of the first point, a multiple of Step
	Step   int64 // seconds between two points of a series
}

// Total is the number of points in the workload.
func (w Workload) Total() int64 { return int64(w.Series) * int64(w.Points) }

// Validate reports a workload that cannot be sent.
func (w Workload) Validate() error {
	switch {
	case w.Series <= 0:
		return fmt.Errorf("series must be positive, got %d", w.Series)
	case w.Points <= 0:
		return fmt.Errorf("points must be positive, got %d", w.Points)
	case w.Step <= 0:
		return fmt.Errorf("step must be positive, got %d", w.Step)
	case w.Start <= 0 || w.Start%w.Step != 0:
		return fmt.Errorf("start %d must be a positive multiple of the step %d", w.Start, w.Step)
	}
	return nil
}

// Time is the timestamp of point j of every series.
func (w Workload) Time(j int) int64 { return w.Start + int64(j)*w.Step }

// Value is the value of point j of series i: varied, but the same every run.
func (w Workload) Value(i, j int) float64 {
	return float64((i*7+j*13)%1000) + 0.25
}

// Metric, Endpoint and Group are the open-falcon name parts of series i.
func Metric(i int) string   { return "bench.m" + strconv.Itoa(i%100) }
func Endpoint(i int) string { return "host-" + strconv.Itoa(i/100) }
func Group(i int) string    { return "g" + strconv.Itoa(i%10) }

// GraphitePath is series i as a plain Graphite path: endpoint, metric, group.
// Plain (untagged) paths are used so carbon-cache needs no tag database.
func GraphitePath(i int) string {
	return Endpoint(i) + "." + Metric(i) + "." + Group(i)
}

// RRDFile is the file of series i under rrdcached's base directory. Files
// sit flat in one directory because rrdcached's CREATE does not make
// directories.
func RRDFile(i int) string {
	return Endpoint(i) + "_" + Metric(i) + "_" + Group(i) + ".rrd"
}

// ShardSeries lists the series that connection conn of conns sends: every
// conns-th series, so each series goes over exactly one connection and its
// points stay in time order.
func ShardSeries(w Workload, conn, conns int) []int {
	var ids []int
	for i := conn; i < w.Series; i += conns {
		ids = append(ids, i)
	}
	return ids
}

// AppendGraphiteLine appends "path value timestamp\n" for point j of series i.
func AppendGraphiteLine(buf []byte, w Workload, i, j int) []byte {
	buf = append(buf, GraphitePath(i)...)
	buf = append(buf, ' ')
	buf = strconv.AppendFloat(buf, w.Value(i, j), 'g', -1, 64)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, w.Time(j), 10)
	return append(buf, '\n')
}

// AppendFalconItem appends point j of series i as one open-falcon push item.
func AppendFalconItem(buf []byte, w Workload, i, j int) []byte {
	buf = append(buf, `{"endpoint":"`...)
	buf = append(buf, Endpoint(i)...)
	buf = append(buf, `","metric":"`...)
	buf = append(buf, Metric(i)...)
	buf = append(buf, `","timestamp":`...)
	buf = strconv.AppendInt(buf, w.Time(j), 10)
	buf = append(buf, `,"step":`...)
	buf = strconv.AppendInt(buf, w.Step, 10)
	buf = append(buf, `,"value":`...)
	buf = strconv.AppendFloat(buf, w.Value(i, j), 'g', -1, 64)
	buf = append(buf, `,"counterType":"GAUGE","tags":"group=`...)
	buf = append(buf, Group(i)...)
	return append(buf, `"}`...)
}

// AppendRRDUpdate appends "UPDATE file ts:value\n" for point j of series i.
func AppendRRDUpdate(buf []byte, w Workload, i, j int) []byte {
	buf = append(buf, "UPDATE "...)
	buf = append(buf, RRDFile(i)...)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, w.Time(j), 10)
	buf = append(buf, ':')
	buf = strconv.AppendFloat(buf, w.Value(i, j), 'g', -1, 64)
	return append(buf, '\n')
}

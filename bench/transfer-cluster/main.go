// Command transfer-cluster is the Go half of bench/transfer-cluster.sh and
// the ring simulation of issue 4.
//
//	transfer-cluster load --nodes ADDR,ADDR,... --series N --points N [--conns N] [--batch N] [--replicas N]
//	transfer-cluster drain --nodes ADDR,... [--timeout D]
//	transfer-cluster sim [--nodes 20] [--series 30000000]
//
// load sends open-falcon JSON to /api/push: connection c keeps to node
// c mod len(nodes) and owns its own series, so every series enters through
// one node, in order. It prints one JSON line: points, seconds until every
// POST was answered 200 ("accepted") and until the nodes' storage counters
// reached points × replicas ("stored"), and the rates.
//
// drain waits until no node holds spooled points and prints how long that
// took and the drain rate of the points that were spooled when it started.
//
// sim builds the ring of --nodes nodes in process, places --series series
// on it (names like an open-falcon fleet: host-<i/100>, 100 metrics), and
// prints the load balance (max/mean series per node), the share of series
// that move when one node joins, and the bytes per point of the forwarding
// wire format for a collector-sized batch split over the ring.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/cluster"
	"github.com/opskit/opskit/transfer/ring"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: transfer-cluster load|drain|sim [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "load":
		err = load(os.Args[2:])
	case "drain":
		err = drain(os.Args[2:])
	case "sim":
		err = sim(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "transfer-cluster: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "transfer-cluster:", err)
		os.Exit(1)
	}
}

func load(args []string) error {
	fs := pflag.NewFlagSet("load", pflag.ContinueOnError)
	nodes := fs.StringSlice("nodes", nil, "node HTTP addresses")
	series := fs.Int("series", 10000, "series in total")
	points := fs.Int("points", 50, "points per series")
	conns := fs.Int("conns", 6, "concurrent connections (each keeps to one node and owns series/conns series)")
	batch := fs.Int("batch", 1000, "points per POST")
	replicas := fs.Int("replicas", 1, "copies of each point the storage counters should reach")
	prefix := fs.String("prefix", "bench", "metric name prefix (use a new one per run on the same data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(*nodes) == 0 {
		return errors.New("--nodes is required")
	}
	before, err := storedTotal(*nodes)
	if err != nil {
		return err
	}
	now := time.Now().Unix()
	start := now - now%60 - int64(*points)*60
	perConn := *series / *conns
	var wg sync.WaitGroup
	errs := make(chan error, *conns)
	t0 := time.Now()
	for c := 0; c < *conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := (*nodes)[c%len(*nodes)]
			client := &http.Client{Timeout: time.Minute}
			var items []map[string]any
			flush := func() error {
				if len(items) == 0 {
					return nil
				}
				body, _ := json.Marshal(items)
				items = items[:0]
				resp, err := client.Post("http://"+node+"/api/push", "application/json", bytes.NewReader(body))
				if err != nil {
					return err
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !bytes.Contains(msg, []byte(`"rejected":[]`)) {
					return fmt.Errorf("%s: %d %s", node, resp.StatusCode, msg)
				}
				return nil
			}
			for p := 0; p < *points; p++ {
				for s := 0; s < perConn; s++ {
					i := c*perConn + s
					items = append(items, map[string]any{"endpoint": "host-" + strconv.Itoa(i/100), "metric": *prefix + ".m" + strconv.Itoa(i%100),
						"timestamp": start + int64(p)*60, "step": 60, "value": float64((i*7+p*13)%1000) + 0.25, "counterType": "GAUGE", "tags": "group=g" + strconv.Itoa(i%10)})
					if len(items) == *batch {
						if err := flush(); err != nil {
							errs <- err
							return
						}
					}
				}
			}
			if err := flush(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(t0)
	close(errs)
	for err := range errs {
		return err
	}
	sent := int64(perConn * *conns * *points)
	want := before + sent*int64(*replicas)
	for {
		got, err := storedTotal(*nodes)
		if err != nil {
			return err
		}
		if got >= want {
			break
		}
		if time.Since(t0) > 15*time.Minute {
			return fmt.Errorf("stored %d of %d", got-before, want-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stored := time.Since(t0)
	out, _ := json.Marshal(map[string]any{
		"nodes": len(*nodes), "points": sent, "replicas": *replicas,
		"accepted_s": round(accepted.Seconds()), "stored_s": round(stored.Seconds()),
		"accepted_points_per_s": math.Round(float64(sent) / accepted.Seconds()),
		"stored_points_per_s":   math.Round(float64(sent) / stored.Seconds()),
	})
	fmt.Println(string(out))
	return nil
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

// scrape sums the samples of the series starting with name on every node.
func scrape(nodes []string, name string) (float64, error) {
	var sum float64
	for _, n := range nodes {
		resp, err := http.Get("http://" + n + "/metrics")
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if !strings.HasPrefix(line, name) {
				continue
			}
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				sum += v
			}
		}
	}
	return sum, nil
}

func storedTotal(nodes []string) (int64, error) {
	v, err := scrape(nodes, "opskit_transfer_storage_points_appended_total ")
	return int64(v), err
}

func drain(args []string) error {
	fs := pflag.NewFlagSet("drain", pflag.ContinueOnError)
	nodes := fs.StringSlice("nodes", nil, "node HTTP addresses")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	spooled := func() (float64, error) { return scrape(*nodes, `opskit_transfer_forward_spool_points{kind="peer"`) }
	first, err := spooled()
	if err != nil {
		return err
	}
	t0 := time.Now()
	for {
		n, err := spooled()
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if time.Since(t0) > *timeout {
			return fmt.Errorf("%v points still spooled", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(t0)
	out, _ := json.Marshal(map[string]any{"spooled_points": first, "drain_s": round(d.Seconds()), "drain_points_per_s": math.Round(first / d.Seconds())})
	fmt.Println(string(out))
	return nil
}

func sim(args []string) error {
	fs := pflag.NewFlagSet("sim", pflag.ContinueOnError)
	nodes := fs.Int("nodes", 20, "ring members")
	series := fs.Int("series", 30_000_000, "series placed")
	batch := fs.Int("batch", 2000, "points in the collector-sized batch whose forwarding bytes are measured")
	if err := fs.Parse(args); err != nil {
		return err
	}
	members := make([]ring.Node, *nodes)
	for i := range members {
		members[i] = ring.Node{Name: fmt.Sprintf("transfer-%02d", i+1), Addr: "unused"}
	}
	before, err := ring.New(members, 0)
	if err != nil {
		return err
	}
	after, err := ring.New(append(members, ring.Node{Name: fmt.Sprintf("transfer-%02d", *nodes+1)}), 0)
	if err != nil {
		return err
	}
	index := map[string]int{}
	for i, n := range members {
		index[n.Name] = i
	}
	load := make([]int64, *nodes)
	moved := int64(0)
	t0 := time.Now()
	var key []byte
	var owners []string
	name := metric.Label{Name: metric.NameLabel}
	for i := 0; i < *series; i++ {
		ls := metric.Labels{name, {Name: metric.EndpointLabel, Value: "host-" + strconv.Itoa(i/100)}, {Name: "group", Value: "g" + strconv.Itoa(i%10)}}
		ls[0].Value = "m" + strconv.Itoa(i%100)
		key = ls.AppendKey(key[:0])
		owners = before.Owners(owners[:0], key, 1)
		load[index[owners[0]]]++
		if after.Primary(key) != owners[0] {
			moved++
		}
	}
	elapsed := time.Since(t0)
	var maxLoad, minLoad int64 = 0, math.MaxInt64
	for _, l := range load {
		maxLoad, minLoad = max(maxLoad, l), min(minLoad, l)
	}
	mean := float64(*series) / float64(*nodes)

	// Forwarding bytes: one collector-sized batch of batch points (20 hosts
	// of 100 metrics), split by owner, each share one spooled block framed
	// as on the wire.
	pts := make([]metric.Point, *batch)
	for i := range pts {
		pts[i] = metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "bench.m" + strconv.Itoa(i%100)},
			metric.Label{Name: metric.EndpointLabel, Value: "host-" + strconv.Itoa(1000+i/100)}, metric.Label{Name: "group", Value: "g" + strconv.Itoa(i%10)}),
			Time: 1_700_000_000, Value: float64((i*7)%1000) + 0.25, Step: 60}
	}
	shares := map[string][]metric.Point{}
	for _, p := range pts {
		o := before.Primary(p.Labels.AppendKey(nil))
		shares[o] = append(shares[o], p)
	}
	wire := 0
	for _, s := range shares {
		wire += len(cluster.AppendFrame(nil, cluster.EncodeBlock(s)))
	}
	whole := len(cluster.AppendFrame(nil, cluster.EncodeBlock(pts)))
	jsonBytes, _ := json.Marshal(falconItems(pts))
	out, _ := json.Marshal(map[string]any{
		"nodes": *nodes, "series": *series, "ring": ring.Version, "virtual_nodes": ring.DefaultVirtualNodes,
		"max_over_mean": round(float64(maxLoad) / mean), "min_over_mean": round(float64(minLoad) / mean),
		"moved_on_join": round(float64(moved) / float64(*series)), "ideal_moved": round(1 / float64(*nodes+1)),
		"wire_bytes_per_point_split":  round(float64(wire) / float64(len(pts))),
		"wire_bytes_per_point_whole":  round(float64(whole) / float64(len(pts))),
		"falcon_json_bytes_per_point": round(float64(len(jsonBytes)) / float64(len(pts))),
		"placement_ns_per_series":     math.Round(float64(elapsed.Nanoseconds()) / float64(*series) / 2),
	})
	fmt.Println(string(out))
	return nil
}

func falconItems(pts []metric.Point) []cluster.FalconItem {
	out := make([]cluster.FalconItem, len(pts))
	for i, p := range pts {
		out[i] = cluster.ToFalcon(p)
	}
	return out
}

// Command collector-logs is the helper of bench/collector-logs.sh:
//
//	collector-logs gen --bytes N --out FILE   write realistic access-log lines; print the line count
//	collector-logs wait --brokers B --topic T --records N [--timeout D]
//	                                          wait until the topic holds N records; print the seconds waited
package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: collector-logs gen|wait [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "wait":
		err = wait(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "collector-logs: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "collector-logs: %v\n", err)
		os.Exit(1)
	}
}

// gen writes nginx-style access lines with varied paths, agents and
// timings (about 200 bytes each), like a busy web server's log.
func gen(args []string) error {
	fs := pflag.NewFlagSet("gen", pflag.ContinueOnError)
	size := fs.Int64("bytes", 1<<30, "file size to reach")
	out := fs.String("out", "", "file to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	paths := []string{"/api/v1/orders", "/api/v1/users", "/static/app.js", "/static/style.css", "/healthz", "/api/v1/cart/items", "/login", "/search"}
	agents := []string{
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
		"curl/8.5.0", "Go-http-client/1.1", "python-requests/2.31.0",
	}
	statuses := []int{200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 500, 502}
	t := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	var written int64
	lines := 0
	var b strings.Builder
	for written < *size {
		b.Reset()
		t = t.Add(time.Duration(rng.IntN(3000)) * time.Microsecond)
		fmt.Fprintf(&b, "10.%d.%d.%d - - [%s] \"%s %s/%d?page=%d HTTP/1.1\" %d %d \"-\" \"%s\" rt=%.3f\n",
			rng.IntN(256), rng.IntN(256), rng.IntN(256), t.Format("02/Jan/2006:15:04:05 -0700"),
			[]string{"GET", "GET", "GET", "POST", "PUT"}[rng.IntN(5)], paths[rng.IntN(len(paths))], rng.IntN(100000), rng.IntN(50),
			statuses[rng.IntN(len(statuses))], rng.IntN(50000), agents[rng.IntN(len(agents))], rng.Float64()*2)
		n, err := w.WriteString(b.String())
		if err != nil {
			return err
		}
		written += int64(n)
		lines++
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println(lines)
	return nil
}

// wait polls the topic's high watermarks until they add up to the target.
func wait(args []string) error {
	fs := pflag.NewFlagSet("wait", pflag.ContinueOnError)
	brokers := fs.StringSlice("brokers", nil, "seed brokers")
	topic := fs.String("topic", "logs", "topic")
	records := fs.Int64("records", 0, "records to wait for")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(*brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for {
		n, err := highWatermarks(ctx, cl, *topic)
		if err == nil && n >= *records {
			fmt.Printf("%.3f\n", time.Since(start).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s holds %d of %d records (%v)", *topic, n, *records, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func highWatermarks(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if len(mresp.Topics) == 0 {
		return 0, fmt.Errorf("no topic %s", topic)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range mresp.Topics[0].Partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p.Partition
		rp.Timestamp = -1 // latest
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	shards := cl.RequestSharded(ctx, req)
	var total int64
	for _, sh := range shards {
		if sh.Err != nil {
			return 0, sh.Err
		}
		for _, t := range sh.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t.Partitions {
				total += p.Offset
			}
		}
	}
	return total, nil
}

// Command kfake runs an in-process fake Kafka cluster (franz-go's kfake) as a
// standalone process, for benchmarks and make demo:
//
//	kfake --listen 127.0.0.1:9092 --brokers 3 --topics logs:3,metrics:1
//
// --segment-bytes sets the brokers' log.segment.bytes. kfake keeps a
// segment as one in-memory buffer that doubles as it grows, so with its
// 100 MiB default a benchmark that writes a few hundred MB spends much of
// the broker's CPU copying and faulting in ever larger buffers, and more
// so, out of proportion, for a client that sends somewhat more bytes;
// small segments keep that cost proportional to the bytes written.
//
// It prints the brokers' addresses on stdout as one comma-separated line
// (ready to pass to any --kafka-brokers flag or to kcat -b), then serves
// until SIGTERM or SIGINT and exits 0. Brokers listen on consecutive ports
// from --listen's port, or on random free ports if that port is 0. Data is
// kept in memory only.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Exit codes, as for every opskit command.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	host    string
	port    int
	brokers int
	topics  []topicSpec
	// segmentBytes is log.segment.bytes; 0 keeps kfake's default.
	segmentBytes int64
}

// run serves until ctx ends and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "kfake: %v\n", err)
		return exitUsage
	}

	cluster, err := kfake.NewCluster(clusterOptions(opts)...)
	if err != nil {
		fmt.Fprintf(stderr, "kfake: start cluster: %v\n", err)
		return exitError
	}
	defer cluster.Close()

	if _, err := fmt.Fprintln(stdout, strings.Join(cluster.ListenAddrs(), ",")); err != nil {
		fmt.Fprintf(stderr, "kfake: print addresses: %v\n", err)
		return exitError
	}
	<-ctx.Done()
	return exitOK
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	flags := pflag.NewFlagSet("kfake", pflag.ContinueOnError)
	flags.SetOutput(stderr)
	listen := flags.String("listen", "127.0.0.1:9092", "address of the first broker; the others take the next ports (port 0: random ports)")
	brokers := flags.Int("brokers", 1, "number of brokers")
	topics := flags.String("topics", "", "topics to create, as name:partitions,... (e.g. logs:3,metrics:1)")
	segmentBytes := flags.Int64("segment-bytes", 0, "log.segment.bytes of the brokers (0: kfake's default, 100 MiB); a few MiB keeps the broker's CPU per byte even")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kfake [flags]\n\nRuns a fake Kafka cluster in memory until SIGTERM or SIGINT;\nprints the broker addresses on stdout.\n\n")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return options{}, err
	}
	if flags.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", flags.Args())
	}

	var opts options
	host, portText, err := net.SplitHostPort(*listen)
	if err != nil {
		return options{}, fmt.Errorf("--listen %q: %w", *listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		// Brokers advertise the address they listen on; clients cannot
		// connect to 0.0.0.0.
		return options{}, fmt.Errorf("--listen %q: give a concrete host, brokers advertise it to clients", *listen)
	}
	opts.host = host
	if opts.port, err = strconv.Atoi(portText); err != nil || opts.port < 0 || opts.port > 65535 {
		return options{}, fmt.Errorf("--listen %q: bad port", *listen)
	}
	opts.brokers = *brokers
	if opts.brokers < 1 || opts.brokers > 64 {
		return options{}, fmt.Errorf("--brokers %d: want 1 to 64", opts.brokers)
	}
	if opts.port != 0 && opts.port+opts.brokers-1 > 65535 {
		return options{}, fmt.Errorf("--listen %q with %d brokers runs past port 65535", *listen, opts.brokers)
	}
	if opts.topics, err = parseTopics(*topics); err != nil {
		return options{}, fmt.Errorf("--topics: %w", err)
	}
	opts.segmentBytes = *segmentBytes
	if opts.segmentBytes != 0 && (opts.segmentBytes < 14 || opts.segmentBytes > math.MaxInt32) {
		// Kafka's own bounds: at least a record's overhead, an int.
		return options{}, fmt.Errorf("--segment-bytes %d: want 0 or 14 to %d", opts.segmentBytes, math.MaxInt32)
	}
	return opts, nil
}

// clusterOptions turns the command line into kfake options.
func clusterOptions(opts options) []kfake.Opt {
	kopts := []kfake.Opt{
		kfake.NumBrokers(opts.brokers),
		// kfake listens on 127.0.0.1; put the brokers on the requested host.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, port, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(opts.host, port))
		}),
	}
	if opts.port != 0 {
		ports := make([]int, opts.brokers)
		for i := range ports {
			ports[i] = opts.port + i
		}
		kopts = append(kopts, kfake.Ports(ports...))
	}
	if opts.segmentBytes > 0 {
		kopts = append(kopts, kfake.BrokerConfigs(map[string]string{"log.segment.bytes": strconv.FormatInt(opts.segmentBytes, 10)}))
	}
	for _, topic := range opts.topics {
		kopts = append(kopts, kfake.SeedTopics(topic.partitions, topic.name))
	}
	return kopts
}

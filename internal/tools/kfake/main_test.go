package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/opskit/opskit/internal/testkit"
)

// runAsCommandEnv makes the test binary act as the kfake command, so the
// tests can run it as a real process without a separate build.
const runAsCommandEnv = "OPSKIT_KFAKE_RUN_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(runAsCommandEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr string
	}{
		{name: "defaults", args: nil, want: options{host: "127.0.0.1", port: 9092, brokers: 1}},
		{
			name: "all flags",
			args: []string{"--listen", "127.0.0.2:19092", "--brokers", "3", "--topics", "logs:3,metrics:1"},
			want: options{host: "127.0.0.2", port: 19092, brokers: 3, topics: []topicSpec{{"logs", 3}, {"metrics", 1}}},
		},
		{name: "unspecified host", args: []string{"--listen", "0.0.0.0:9092"}, wantErr: "concrete host"},
		{name: "empty host", args: []string{"--listen", ":9092"}, wantErr: "concrete host"},
		{name: "no port", args: []string{"--listen", "127.0.0.1"}, wantErr: "--listen"},
		{name: "bad port", args: []string{"--listen", "127.0.0.1:70000"}, wantErr: "bad port"},
		{name: "ports run out", args: []string{"--listen", "127.0.0.1:65535", "--brokers", "2"}, wantErr: "past port 65535"},
		{name: "no brokers", args: []string{"--brokers", "0"}, wantErr: "--brokers"},
		{name: "bad topics", args: []string{"--topics", "logs:0"}, wantErr: "--topics"},
		{name: "segment bytes", args: []string{"--segment-bytes", "8388608"}, want: options{host: "127.0.0.1", port: 9092, brokers: 1, segmentBytes: 8 << 20}},
		{name: "segment bytes too small", args: []string{"--segment-bytes", "13"}, wantErr: "--segment-bytes"},
		{name: "segment bytes negative", args: []string{"--segment-bytes", "-1"}, wantErr: "--segment-bytes"},
		{name: "segment bytes over an int", args: []string{"--segment-bytes", "2147483648"}, wantErr: "--segment-bytes"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags(%q) error %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if got.host != tt.want.host || got.port != tt.want.port || got.brokers != tt.want.brokers || got.segmentBytes != tt.want.segmentBytes ||
				formatTopics(got.topics) != formatTopics(tt.want.topics) {
				t.Fatalf("parseFlags(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	if code := run(ctx, []string{"--brokers", "0"}, io.Discard, &stderr); code != exitUsage {
		t.Errorf("bad usage exited %d, want %d", code, exitUsage)
	}
	if code := run(ctx, []string{"--help"}, io.Discard, &stderr); code != exitOK {
		t.Errorf("--help exited %d, want %d", code, exitOK)
	}
	// A port that is taken makes startup fail with exit 1.
	taken := testkit.FreeAddr(t)
	ln, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stderr.Reset()
	if code := run(ctx, []string{"--listen", taken}, io.Discard, &stderr); code != exitError {
		t.Errorf("taken port exited %d, want %d (stderr %q)", code, exitError, stderr.String())
	}
}

// TestCommandServesUntilSIGTERM runs kfake as a process, talks Kafka to the
// brokers it prints, and stops it with SIGTERM.
func TestCommandServesUntilSIGTERM(t *testing.T) {
	tests := []struct {
		name    string
		brokers int
		port    int
	}{
		{name: "one broker on the given port", brokers: 1, port: testkit.FreePort(t)},
		{name: "three brokers on random ports", brokers: 3, port: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			listen := "127.0.0.1:" + strconv.Itoa(tt.port)
			cmd := exec.Command(os.Args[0], "--listen", listen, "--brokers", strconv.Itoa(tt.brokers), "--topics", "logs:3,metrics:1")
			cmd.Env = append(os.Environ(), runAsCommandEnv+"=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })

			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				cmd.Wait()
				t.Fatalf("read addresses: %v (stderr %q)", err, stderr.String())
			}
			addrs := strings.Split(strings.TrimSpace(line), ",")
			if len(addrs) != tt.brokers {
				t.Fatalf("printed %q, want %d addresses", line, tt.brokers)
			}
			if tt.port != 0 && addrs[0] != listen {
				t.Fatalf("first broker on %s, want %s", addrs[0], listen)
			}

			checkTopics(t, addrs, map[string]int{"logs": 3, "metrics": 1})

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("after SIGTERM: %v (stderr %q)", err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("kfake still running 10s after SIGTERM")
			}
		})
	}
}

// checkTopics produces to and reads metadata from the brokers at addrs.
func checkTopics(t *testing.T, addrs []string, want map[string]int) {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.ProduceSync(ctx, &kgo.Record{Topic: "logs", Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, client)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	got := map[string]int{}
	for _, topic := range resp.Topics {
		got[*topic.Topic] = len(topic.Partitions)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("topics %v, want %v", got, want)
	}
	if len(resp.Brokers) != len(addrs) {
		t.Fatalf("metadata lists %d brokers, want %d", len(resp.Brokers), len(addrs))
	}
}

// TestSegmentBytes: --segment-bytes becomes the brokers' log.segment.bytes,
// and without it the brokers keep kfake's default.
func TestSegmentBytes(t *testing.T) {
	tests := []struct {
		name string
		opts options
		want string
	}{
		{name: "set", opts: options{host: "127.0.0.1", brokers: 1, segmentBytes: 8 << 20}, want: "8388608"},
		{name: "default", opts: options{host: "127.0.0.1", brokers: 1}, want: strconv.Itoa(100 << 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cluster, err := kfake.NewCluster(clusterOptions(tt.opts)...)
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			client, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req := kmsg.NewPtrDescribeConfigsRequest()
			res := kmsg.NewDescribeConfigsRequestResource()
			res.ResourceType = kmsg.ConfigResourceTypeBroker
			res.ResourceName = "0"
			res.ConfigNames = []string{"log.segment.bytes"}
			req.Resources = append(req.Resources, res)
			resp, err := req.RequestWith(ctx, client)
			if err != nil {
				t.Fatalf("describe configs: %v", err)
			}
			got := ""
			for _, r := range resp.Resources {
				for _, c := range r.Configs {
					if c.Name == "log.segment.bytes" && c.Value != nil {
						got = *c.Value
					}
				}
			}
			if got != tt.want {
				t.Fatalf("log.segment.bytes %q, want %q", got, tt.want)
			}
		})
	}
}

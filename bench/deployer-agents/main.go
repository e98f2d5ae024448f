// Command deployer-agents simulates a fleet of deploy agents long polling
// one deployer, to measure what the deployer costs at idle and how much
// time it adds to a deploy beyond the pauses it was told to make.
//
// Each simulated agent speaks the agents' contract (deploy/README.md):
// GET /api/v1/hosts/{host}/tasks?after=ID&wait=W, and for each task a POST
// /api/v1/tasks/{id}/progress with a done result at once (a no-op deploy).
//
//	deployer-agents hosts --agents 1000 --app bench > hosts.yaml
//	deployer-agents run --deployer http://127.0.0.1:7170 --pid PID --agents 1000 --pause 1s --batches 10
//
// run waits until the deployer holds every agent's poll, measures the
// deployer's CPU and resident memory (from /proc/PID) over --idle, then
// submits a deploy of --app and times it to its end.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: deployer-agents hosts|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "hosts":
		err = hostsCmd(os.Args[2:])
	case "run":
		err = runCmd(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "deployer-agents: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deployer-agents:", err)
		os.Exit(1)
	}
}

func hostName(prefix string, i int) string { return fmt.Sprintf("%s%04d", prefix, i) }

// hostsCmd prints a static hosts file for deployer's --hosts.
func hostsCmd(args []string) error {
	fs := flag.NewFlagSet("hosts", flag.ExitOnError)
	n := fs.Int("agents", 1000, "number of hosts")
	app := fs.String("app", "bench", "app")
	env := fs.String("env", "prod", "environment")
	prefix := fs.String("prefix", "bench-", "host name prefix")
	fs.Parse(args)
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "apps:\n  %s:\n    %s:\n", *app, *env)
	for i := range *n {
		// The agents are never called by address in a no-op deploy.
		fmt.Fprintf(w, "      - {name: %s, addr: \"127.0.0.1:9\"}\n", hostName(*prefix, i))
	}
	return w.Flush()
}

type options struct {
	deployer, app, env, prefix, token string
	agents, pid, batches              int
	pollWait, idle, pause, timeout    time.Duration
}

func runCmd(args []string) error {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.deployer, "deployer", "http://127.0.0.1:7170", "deployer's base URL")
	fs.StringVar(&o.app, "app", "bench", "app to deploy")
	fs.StringVar(&o.env, "env", "prod", "environment")
	fs.StringVar(&o.prefix, "prefix", "bench-", "host name prefix (as given to hosts)")
	fs.StringVar(&o.token, "token", "", "deployer bearer token (none needed on loopback)")
	fs.IntVar(&o.agents, "agents", 1000, "simulated agents")
	fs.IntVar(&o.pid, "pid", 0, "deployer's pid, for its CPU and memory (/proc)")
	fs.IntVar(&o.batches, "batches", 10, "batches the app's strategy makes (pauses = batches - 1)")
	fs.DurationVar(&o.pollWait, "poll-wait", 30*time.Second, "wait asked for in each long poll (the agents' --poll-wait)")
	fs.DurationVar(&o.idle, "idle", 30*time.Second, "idle measurement window")
	fs.DurationVar(&o.pause, "pause", time.Second, "the app's configured pause between batches")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on the deploy after this long")
	fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return run(ctx, o)
}

// fleet is the simulated agents' shared state.
type fleet struct {
	o      options
	client *http.Client
	polls  atomic.Int64
	tasks  atomic.Int64
	errs   atomic.Int64
	done   sync.Map // task id -> time reported
}

func run(ctx context.Context, o options) error {
	tr := &http.Transport{
		MaxIdleConns:        o.agents * 2,
		MaxIdleConnsPerHost: o.agents * 2,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	f := &fleet{o: o, client: &http.Client{Transport: tr}}
	agentCtx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range o.agents {
		wg.Go(func() { f.agent(agentCtx, hostName(o.prefix, i)) })
	}
	defer func() { stopAgents(); wg.Wait() }()

	parked, err := f.waitParked(ctx, o.agents, 60*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("agents: %d long polls parked at deployer after %.2f s\n", parked, time.Since(start).Seconds())

	if o.pid > 0 {
		time.Sleep(2 * time.Second) // let the connection storm settle
		cpu, rss, peak, err := idleCost(ctx, o.pid, o.idle)
		if err != nil {
			return err
		}
		fmt.Printf("idle over %s with %d polls parked: CPU %.2f %% of a core, RSS %.1f MB (peak %.1f MB)\n", o.idle, o.agents, cpu, rss, peak)
		fmt.Printf("polls answered during idle and before: %d\n", f.polls.Load())
	}

	id, submitted, err := f.submit(ctx)
	if err != nil {
		return err
	}
	answered := time.Since(submitted)
	state, started, finished, err := f.waitEnd(ctx, id)
	wall := time.Since(submitted)
	if err != nil {
		return err
	}
	pauses := time.Duration(o.batches-1) * o.pause
	fmt.Printf("deploy %s: %s on %d hosts, %d tasks reported\n", id, state, o.agents, f.tasks.Load())
	fmt.Printf("wall (submit to end seen by the client): %.3f s; deployer's own started..finished: %.3f s\n",
		wall.Seconds(), finished.Sub(started).Seconds())
	fmt.Printf("submit answered in %.3f s; started %.3f s after submit; end seen %.3f s after finished\n",
		answered.Seconds(), started.Sub(submitted).Seconds(), submitted.Add(wall).Sub(finished).Seconds())
	fmt.Printf("pauses: %d x %s = %.3f s; overhead = wall - pauses = %.3f s\n", o.batches-1, o.pause, pauses.Seconds(), (wall - pauses).Seconds())
	if o.pid > 0 {
		rss, peak, _ := memory(o.pid)
		fmt.Printf("deployer after the deploy: RSS %.1f MB (peak %.1f MB)\n", rss, peak)
	}
	if n := f.errs.Load(); n > 0 {
		fmt.Printf("agent request errors: %d\n", n)
	}
	if state != "succeeded" {
		return fmt.Errorf("deploy ended %s", state)
	}
	return nil
}

// agent long polls for host's tasks and reports each done at once.
func (f *fleet) agent(ctx context.Context, host string) {
	after := ""
	for ctx.Err() == nil {
		u := fmt.Sprintf("%s/api/v1/hosts/%s/tasks?after=%s&wait=%s", f.o.deployer, host, after, f.o.pollWait)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := f.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				f.errs.Add(1)
				sleep(ctx, time.Second)
			}
			continue
		}
		f.polls.Add(1)
		var tasks []json.RawMessage
		if resp.StatusCode == http.StatusOK {
			err = json.NewDecoder(resp.Body).Decode(&tasks)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent) {
			f.errs.Add(1)
			sleep(ctx, time.Second)
			continue
		}
		for _, raw := range tasks {
			var t struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(raw, &t) != nil || t.ID == "" {
				f.errs.Add(1)
				continue
			}
			if f.report(ctx, t.ID, raw) {
				after = t.ID
			} else {
				break // polled again, the task comes back
			}
		}
	}
}

// report posts a done result of the task.
func (f *fleet) report(ctx context.Context, id string, task json.RawMessage) bool {
	now := time.Now().UTC()
	res := map[string]any{"task": task, "state": "done", "started": now, "finished": now,
		"steps": []map[string]any{{"name": "switched", "at": now, "detail": "no-op"}}}
	body, _ := json.Marshal(res)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.o.deployer+"/api/v1/tasks/"+id+"/progress", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		f.errs.Add(1)
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		f.errs.Add(1)
		return false
	}
	if _, dup := f.done.LoadOrStore(id, now); !dup {
		f.tasks.Add(1)
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitParked scrapes deployer's /metrics until it holds n polls.
func (f *fleet) waitParked(ctx context.Context, n int, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	last := 0
	for time.Now().Before(deadline) {
		v, err := f.metric(ctx, "opskit_deployer_agent_polls_parked")
		if err == nil {
			last = int(v)
			if last >= n {
				return last, nil
			}
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
	}
	return last, fmt.Errorf("only %d of %d polls parked after %s", last, n, within)
}

func (f *fleet) metric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.o.deployer+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}

func (f *fleet) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, f.o.deployer+path, body)
	if f.o.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.o.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

func (f *fleet) submit(ctx context.Context) (string, time.Time, error) {
	version := "noop-" + strconv.FormatInt(time.Now().Unix(), 10)
	req := map[string]string{"app": f.o.app, "env": f.o.env, "version": version,
		"artifact": "http://127.0.0.1:9/noop.tar.gz", "sha256": strings.Repeat("0", 64)}
	var d struct {
		ID string `json:"id"`
	}
	at := time.Now()
	if err := f.do(ctx, http.MethodPost, "/v1/deploys", req, &d); err != nil {
		return "", at, err
	}
	if d.ID == "" {
		return "", at, errors.New("submit answered no id")
	}
	return d.ID, at, nil
}

// waitEnd polls the deploy until it ends. It reads the app's deploy list
// (summaries, without the 1,000 hosts' details), so that polling costs
// the deployer little.
func (f *fleet) waitEnd(ctx context.Context, id string) (string, time.Time, time.Time, error) {
	deadline := time.Now().Add(f.o.timeout)
	path := fmt.Sprintf("/v1/deploys?app=%s&env=%s&limit=5", f.o.app, f.o.env)
	for time.Now().Before(deadline) {
		var ds []struct {
			ID       string    `json:"id"`
			State    string    `json:"state"`
			Started  time.Time `json:"started"`
			Finished time.Time `json:"finished"`
		}
		if err := f.do(ctx, http.MethodGet, path, nil, &ds); err != nil {
			return "", time.Time{}, time.Time{}, err
		}
		for _, d := range ds {
			if d.ID != id {
				continue
			}
			switch d.State {
			case "succeeded", "failed", "rolled_back", "aborted", "cancelled":
				return d.State, d.Started, d.Finished, nil
			}
		}
		sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return "", time.Time{}, time.Time{}, ctx.Err()
		}
	}
	return "", time.Time{}, time.Time{}, fmt.Errorf("deploy %s still not ended after %s", id, f.o.timeout)
}

// idleCost measures the process's CPU share and memory over d.
func idleCost(ctx context.Context, pid int, d time.Duration) (cpuPercent, rssMB, peakMB float64, err error) {
	t0, err := cpuTicks(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	sleep(ctx, d)
	t1, err := cpuTicks(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	rssMB, peakMB, err = memory(pid)
	// USER_HZ is 100 on every Linux Go supports.
	return float64(t1-t0) / 100 / time.Since(start).Seconds() * 100, rssMB, peakMB, err
}

func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may hold spaces: state is 3,
	// utime 14, stime 15.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

func memory(pid int) (rssMB, peakMB float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			rssMB = kb / 1024
		case "VmHWM":
			peakMB = kb / 1024
		}
	}
	return rssMB, peakMB, nil
}

package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/internal/dye"
)

// adminTimeout bounds one daemon's answer to dye or trace.
const adminTimeout = 10 * time.Second

// dyeTarget is a daemon whose admin endpoints dye and trace call.
type dyeTarget struct {
	ID, Kind, Addr string
}

// fleetDye is `configd fleet dye MATCH`: set a dye rule on every daemon and
// print its id.
func fleetDye(ctx context.Context, e *env, args []string) error {
	if args == nil {
		e.fs.Duration("for", 10*time.Minute, "how long the dye rule lasts (dye)")
		e.fs.String("id", "", "the dye id (dye; default: a new one)")
		e.fs.StringSlice("targets", nil, "daemons' HOST:PORT to call instead of the daemons registered with configd (dye, trace)")
		e.fs.String("fleet-admin-token", "", "bearer token of the daemons' /admin/* (dye, trace; else OPSKIT_ADMIN_TOKEN)")
		return nil
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	match, err := dye.ParseMatch(args[0])
	if err != nil {
		return usagef("%v (want e.g. 'endpoint=web01,metric=cpu.idle')", err)
	}
	id, _ := e.fs.GetString("id")
	if id == "" {
		id = dye.NewID()
	}
	lasts, _ := e.fs.GetDuration("for")
	if lasts <= 0 {
		return usagef("--for %v: want a positive duration", lasts)
	}
	rule := dye.Rule{ID: id, Match: match, Until: time.Now().Add(lasts).UTC().Truncate(time.Second)}
	if err := rule.Check(); err != nil {
		return usagef("%v", err)
	}
	body, err := json.Marshal(rule)
	if err != nil {
		return err
	}
	targets, err := dyeTargets(ctx, e)
	if err != nil {
		return err
	}
	token := adminToken(e)
	errs := forEachTarget(targets, func(t dyeTarget) error {
		_, err := adminCall(ctx, token, http.MethodPost, "http://"+t.Addr+"/admin/dye", body)
		return err
	})
	if _, err := fmt.Fprintln(e.stdout, id); err != nil {
		return err
	}
	return joinTargetErrors("dye "+id+" not set on", targets, errs)
}

// fleetTrace is `configd fleet trace ID`: the dye's trace records from
// every daemon, in time order.
func fleetTrace(ctx context.Context, e *env, args []string) error {
	if args == nil {
		return nil // --targets and --fleet-admin-token come with dye
	}
	if err := nargs(args, 1, 1); err != nil {
		return err
	}
	id := args[0]
	if err := dye.CheckID(id); err != nil {
		return usagef("%v", err)
	}
	targets, err := dyeTargets(ctx, e)
	if err != nil {
		return err
	}
	token := adminToken(e)
	var mu sync.Mutex
	var records []dye.Record
	errs := forEachTarget(targets, func(t dyeTarget) error {
		raw, err := adminCall(ctx, token, http.MethodGet, "http://"+t.Addr+"/admin/trace?id="+url.QueryEscape(id), nil)
		if err != nil {
			return err
		}
		recs, err := decodeTrace(raw)
		mu.Lock()
		records = append(records, recs...)
		mu.Unlock()
		return err
	})
	sort.SliceStable(records, func(i, j int) bool { return records[i].Time.Before(records[j].Time) })
	asJSON, _ := e.fs.GetBool("json")
	for _, r := range records {
		if asJSON {
			err = e.out.Write(r)
		} else {
			_, err = fmt.Fprintln(e.stdout, FormatTraceRecord(r))
		}
		if err != nil {
			return err
		}
	}
	return joinTargetErrors("trace not read from", targets, errs)
}

// FormatTraceRecord is one hop on one line: time, daemon kind, instance,
// hop, time spent in the hop, item.
func FormatTraceRecord(r dye.Record) string {
	took := time.Duration(r.Duration * float64(time.Second)).Round(time.Microsecond)
	return fmt.Sprintf("%s %-9s %-21s %-28s %10s  %s", r.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), r.Daemon, r.Instance, r.Hop, took, r.Item)
}

// decodeTrace reads the JSON lines of GET /admin/trace.
func decodeTrace(raw []byte) ([]dye.Record, error) {
	var out []dye.Record
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r dye.Record
		if err := json.Unmarshal(line, &r); err != nil {
			return out, fmt.Errorf("trace record: %w", err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// dyeTargets are the daemons to call: --targets, or the daemons up in
// configd's fleet list.
func dyeTargets(ctx context.Context, e *env) ([]dyeTarget, error) {
	if list, _ := e.fs.GetStringSlice("targets"); len(list) > 0 {
		out := make([]dyeTarget, 0, len(list))
		for _, a := range list {
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, dyeTarget{ID: a, Addr: strings.TrimPrefix(a, "http://")})
			}
		}
		return out, nil
	}
	daemons, err := e.remote.Fleet(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the fleet: %w", err)
	}
	var out []dyeTarget
	for _, d := range daemons {
		if d.State != api.DaemonUp {
			continue
		}
		out = append(out, dyeTarget{ID: d.ID, Kind: d.Kind, Addr: reachable(d.Addr, d.Host)})
	}
	if len(out) == 0 {
		return nil, errors.New("no daemon is up in configd's fleet (start them with --configd, or give --targets)")
	}
	return out, nil
}

// reachable replaces an unspecified listen host (0.0.0.0, [::]) by the
// daemon's host name.
func reachable(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); (h == "" || ip != nil && ip.IsUnspecified()) && host != "" {
		return net.JoinHostPort(host, port)
	}
	return addr
}

func adminToken(e *env) string {
	if t, _ := e.fs.GetString("fleet-admin-token"); t != "" {
		return t
	}
	return os.Getenv("OPSKIT_ADMIN_TOKEN")
}

// forEachTarget calls fn for every target at once; errs[i] is target i's.
func forEachTarget(targets []dyeTarget, fn func(dyeTarget) error) []error {
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(t)
		}()
	}
	wg.Wait()
	return errs
}

func joinTargetErrors(what string, targets []dyeTarget, errs []error) error {
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s %s: %v", targets[i].Kind, targets[i].ID, err))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%s %d of %d daemons:\n  %s", what, len(failed), len(targets), strings.Join(failed, "\n  "))
}

// adminCall sends one admin request and returns the answer's body; a non-2xx
// answer is an error carrying the daemon's message.
func adminCall(ctx context.Context, token, method, u string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(data))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
	}
	return data, nil
}

package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// sendTimeout bounds one daemon's answer to a broadcast command.
const sendTimeout = 30 * time.Second

// validAdminCommand checks a broadcast command: one path segment of
// letters, digits, '-' and '_' (it becomes /admin/COMMAND).
func validAdminCommand(cmd string) error {
	if cmd == "" || len(cmd) > 64 {
		return fmt.Errorf("command %q: want 1 to 64 characters", cmd)
	}
	for _, r := range cmd {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("command %q: only letters, digits, '-' and '_'", cmd)
		}
	}
	return nil
}

// broadcast runs an admin command on every chosen daemon at once and
// returns each one's answer in the order given. Down daemons are not
// contacted; they are failed results.
func broadcast(ctx context.Context, client *http.Client, token string, daemons []api.FleetDaemon, cmd string, args []string) []api.FleetSendResult {
	results := make([]api.FleetSendResult, len(daemons))
	var wg sync.WaitGroup
	for i, d := range daemons {
		results[i] = api.FleetSendResult{ID: d.ID, Kind: d.Kind, Host: d.Host}
		if d.State != api.DaemonUp {
			results[i].Error = fmt.Sprintf("daemon is %s (last heartbeat %s)", d.State, d.LastSeen.Format(time.RFC3339))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendOne(ctx, client, token, d.Addr, cmd, args, &results[i])
		}()
	}
	wg.Wait()
	return results
}

func sendOne(ctx context.Context, client *http.Client, token, addr, cmd string, args []string, res *api.FleetSendResult) {
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	u := "http://" + addr + "/admin/" + cmd
	method, body := http.MethodPost, strings.NewReader(url.Values{"arg": args}.Encode())
	// `loglevel` with no level asks for the current one.
	if cmd == "loglevel" && len(args) == 0 {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		res.Error = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		res.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		res.Error = err.Error()
		return
	}
	res.Status = resp.StatusCode
	text := strings.TrimSpace(string(data))
	if json.Valid(data) {
		res.Answer = json.RawMessage(text)
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			text = e.Error
		}
	} else if text != "" {
		res.Answer, _ = json.Marshal(text)
	}
	res.OK = resp.StatusCode/100 == 2
	if !res.OK {
		res.Error = text
		if res.Error == "" {
			res.Error = http.StatusText(resp.StatusCode)
		}
	}
}

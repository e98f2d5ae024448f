package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultAgentPort is the deploy agent's listen port when a host has no
// address of its own.
const DefaultAgentPort = "7171"

// ErrRefused is wrapped when an agent refuses a diagnostic command (its
// allowlist, HTTP 403) or the deployer's own allowlist does.
var ErrRefused = errors.New("refused")

// AgentClient calls the deploy agents' local API
// (/api/v1/programs, /api/v1/host, /api/v1/diag).
type AgentClient struct {
	HTTP *http.Client
	// Token is the agents' --api-token ("" when agents serve loopback only).
	Token string
	// CallTimeout bounds one program action or host read (not a diagnostic
	// run, which the agent's own timeout bounds).
	CallTimeout time.Duration
}

func (c *AgentClient) client() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// agentURL is http://ADDR/api/v1/PATH; ADDR is the host's name with the
// default port when the host has no address.
func agentURL(addr, path string) string {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, DefaultAgentPort)
	}
	return "http://" + addr + "/api/v1/" + path
}

func (c *AgentClient) newRequest(ctx context.Context, method, addr, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, agentURL(addr, path), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// AgentError is an agent's non-2xx answer.
type AgentError struct {
	Status  int
	Message string
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("agent answered %d: %s", e.Status, e.Message)
}

// Is makes a 403 match ErrRefused.
func (e *AgentError) Is(target error) bool {
	return target == ErrRefused && e.Status == http.StatusForbidden
}

func agentError(resp *http.Response, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &AgentError{Status: resp.StatusCode, Message: msg}
}

// call does a JSON request and decodes a 2xx answer into out. A non-2xx
// answer is an *AgentError; its body is still decoded into out when it fits
// (the agent sends a program's status with a 409).
func (c *AgentClient) call(ctx context.Context, method, addr, path string, body []byte, out any) error {
	if c.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.CallTimeout)
		defer cancel()
	}
	req, err := c.newRequest(ctx, method, addr, path, body)
	if err != nil {
		return err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		if out != nil {
			_ = json.Unmarshal(b, out)
		}
		return agentError(resp, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// ProgramStatus is a supervised program's state, as the agent reports it.
type ProgramStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	ExitCode int       `json:"exit_code,omitempty"`
	Message  string    `json:"message,omitempty"`
}

// Program runs action (start, stop, restart) on a program of the agent at
// addr and returns the program's status afterwards.
func (c *AgentClient) Program(ctx context.Context, addr, program, action string) (*ProgramStatus, error) {
	var ans struct {
		ProgramStatus
		Program *ProgramStatus `json:"program"` // with a 409
	}
	err := c.call(ctx, http.MethodPost, addr, "programs/"+url.PathEscape(program)+"/"+action, nil, &ans)
	if ans.Program != nil {
		return ans.Program, err
	}
	if ans.Name == "" {
		return nil, err
	}
	return &ans.ProgramStatus, err
}

// HostReport is the agent's GET /api/v1/host.
type HostReport struct {
	Time    time.Time `json:"time"`
	Samples []struct {
		Metric string            `json:"metric"`
		Labels map[string]string `json:"labels"`
		Value  float64           `json:"value"`
	} `json:"samples"`
	Error    string         `json:"error"`
	Programs []ProgramUsage `json:"programs"`
}

// ProgramUsage is a running program's CPU time and resident memory.
type ProgramUsage struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   int64   `json:"rss_bytes"`
}

// Host reads the agent's host metrics and programs' usage.
func (c *AgentClient) Host(ctx context.Context, addr string) (*HostReport, error) {
	var rep HostReport
	if err := c.call(ctx, http.MethodGet, addr, "host", nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Diag runs an allowlisted diagnostic command on the agent at addr,
// copying its output to out as it arrives, and returns its exit code. A
// refusal by the agent's allowlist is an error wrapping ErrRefused; a
// command that ran but failed has its exit code and the agent's X-Error.
func (c *AgentClient) Diag(ctx context.Context, addr, name string, args []string, out io.Writer) (int, error) {
	if args == nil {
		args = []string{}
	}
	body, _ := json.Marshal(map[string][]string{"args": args})
	req, err := c.newRequest(ctx, http.MethodPost, addr, "diag/"+url.PathEscape(name), body)
	if err != nil {
		return -1, err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return -1, agentError(resp, b)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return -1, fmt.Errorf("output cut short: %w", err)
	}
	// Trailers are complete once the body has been read to its end.
	code, convErr := strconv.Atoi(resp.Trailer.Get("X-Exit-Code"))
	if convErr != nil {
		return -1, errors.New("the agent sent no exit code (the run was cut short)")
	}
	if msg := resp.Trailer.Get("X-Error"); msg != "" {
		return code, errors.New(msg)
	}
	return code, nil
}

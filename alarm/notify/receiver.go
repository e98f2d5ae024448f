package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"text/template"
	"time"

	"golang.org/x/time/rate"
)

// ReceiverConfig is one `receivers:` entry, in Alertmanager's format plus
// opskit's exec_configs and webhook templates.
type ReceiverConfig struct {
	Name           string          `yaml:"name"`
	WebhookConfigs []WebhookConfig `yaml:"webhook_configs"`
	ExecConfigs    []ExecConfig    `yaml:"exec_configs"`
	// Merge (opskit) merges low-priority alerts into periodic summaries.
	Merge *MergeConfig `yaml:"merge"`
	// RateLimit (opskit) is storm control.
	RateLimit *RateLimitConfig `yaml:"rate_limit"`
}

// WebhookConfig posts each notification to URL.
type WebhookConfig struct {
	URL          string `yaml:"url"`
	SendResolved *bool  `yaml:"send_resolved"`
	MaxAlerts    int    `yaml:"max_alerts"`
	// Template, when set, is a Go text/template whose output is the body
	// instead of the v4 JSON (for chat tools); see README for its data.
	Template    string            `yaml:"template"`
	ContentType string            `yaml:"content_type"`
	Headers     map[string]string `yaml:"headers"`
}

// ExecConfig pipes the v4 JSON payload to a command's stdin.
type ExecConfig struct {
	Command      []string `yaml:"command"`
	SendResolved *bool    `yaml:"send_resolved"`
	MaxAlerts    int      `yaml:"max_alerts"`
}

// Receiver is a built receiver: its integrations in config order.
type Receiver struct {
	Name         string
	integrations []integration
	client       *http.Client
	merge        *merger
	limiter      *rate.Limiter
}

type integration struct {
	kind    string // webhook or exec
	index   int
	webhook *WebhookConfig
	exec    *ExecConfig
	tmpl    *template.Template
}

// PermanentError is a failure that retrying cannot fix (e.g. HTTP 400).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// BuildReceiver checks a receiver config. client delivers webhooks.
func BuildReceiver(c ReceiverConfig, client *http.Client) (*Receiver, error) {
	if c.Name == "" {
		return nil, errors.New("receiver without a name")
	}
	r := &Receiver{Name: c.Name, client: client}
	if c.Merge != nil {
		m, err := newMerger(c.Merge)
		if err != nil {
			return nil, fmt.Errorf("receiver %s: %w", c.Name, err)
		}
		r.merge = m
	}
	if c.RateLimit != nil {
		l, err := newLimiter(c.RateLimit)
		if err != nil {
			return nil, fmt.Errorf("receiver %s: %w", c.Name, err)
		}
		r.limiter = l
	}
	for i := range c.WebhookConfigs {
		w := &c.WebhookConfigs[i]
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("receiver %s webhook_configs[%d]: url %q is not an http(s) URL", c.Name, i, w.URL)
		}
		in := integration{kind: "webhook", index: i, webhook: w}
		if w.Template != "" {
			t, err := template.New(c.Name).Funcs(templateFuncs).Option("missingkey=zero").Parse(w.Template)
			if err != nil {
				return nil, fmt.Errorf("receiver %s webhook_configs[%d] template: %w", c.Name, i, err)
			}
			in.tmpl = t
		}
		r.integrations = append(r.integrations, in)
	}
	for i := range c.ExecConfigs {
		e := &c.ExecConfigs[i]
		if len(e.Command) == 0 || e.Command[0] == "" {
			return nil, fmt.Errorf("receiver %s exec_configs[%d]: empty command", c.Name, i)
		}
		r.integrations = append(r.integrations, integration{kind: "exec", index: i, exec: e})
	}
	return r, nil
}

func (in *integration) name(int) string { return fmt.Sprintf("%s[%d]", in.kind, in.index) }

func (in *integration) sendResolved() bool {
	p := (*bool)(nil)
	if in.webhook != nil {
		p = in.webhook.SendResolved
	} else {
		p = in.exec.SendResolved
	}
	return p == nil || *p
}

func (in *integration) maxAlerts() int {
	if in.webhook != nil {
		return in.webhook.MaxAlerts
	}
	return in.exec.MaxAlerts
}

func (in *integration) target() string {
	if in.webhook != nil {
		return in.webhook.URL
	}
	return strings.Join(in.exec.Command, " ")
}

func (in *integration) headers() map[string]string {
	if in.webhook != nil {
		return in.webhook.Headers
	}
	return nil
}

func (in *integration) render(p *Payload, now time.Time) ([]byte, string, error) {
	if in.tmpl == nil {
		b, err := json.Marshal(p)
		return b, "application/json", err
	}
	var buf bytes.Buffer
	if err := in.tmpl.Execute(&buf, NewTemplateData(p, now)); err != nil {
		return nil, "", fmt.Errorf("template: %w", err)
	}
	ctype := in.webhook.ContentType
	if ctype == "" {
		ctype = "application/json"
	}
	return buf.Bytes(), ctype, nil
}

// integration finds an integration by name, with its index.
func (r *Receiver) integration(name string) (int, *integration) {
	for i := range r.integrations {
		if r.integrations[i].name(i) == name {
			return i, &r.integrations[i]
		}
	}
	return -1, nil
}

func (r *Receiver) deliver(ctx context.Context, nt *Notification) error {
	_, in := r.integration(nt.Integration)
	if in == nil {
		return &PermanentError{fmt.Errorf("receiver %s has no integration %s any more", r.Name, nt.Integration)}
	}
	if in.exec != nil {
		cmd := exec.CommandContext(ctx, in.exec.Command[0], in.exec.Command[1:]...)
		cmd.Stdin = bytes.NewReader(nt.Body)
		cmd.Env = append(cmd.Environ(), "ALARM_IDEMPOTENCY_KEY="+nt.ID, "ALARM_RECEIVER="+nt.Receiver, "ALARM_STATUS="+nt.Status)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("exec %s: %w: %s", in.exec.Command[0], err, bytes.TrimSpace(out))
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, nt.Target, bytes.NewReader(nt.Body))
	if err != nil {
		return &PermanentError{err}
	}
	req.Header.Set("Content-Type", nt.ContentType)
	req.Header.Set("User-Agent", "opskit-alarm")
	req.Header.Set("Idempotency-Key", nt.ID)
	for k, v := range nt.Headers {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("%s: HTTP %d: %s", nt.Target, resp.StatusCode, bytes.TrimSpace(snippet))
	// Client errors will not go away by retrying, except these two.
	if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout {
		return &PermanentError{err}
	}
	return err
}

// Render renders the body integration i would send for p (for examples and
// checks of templates).
func (r *Receiver) Render(i int, p *Payload, now time.Time) ([]byte, error) {
	if i < 0 || i >= len(r.integrations) {
		return nil, fmt.Errorf("receiver %s has no integration %d", r.Name, i)
	}
	body, _, err := r.integrations[i].render(p, now)
	return body, err
}

// Package hosts answers which hosts an app runs on: from a static YAML file
// or from configd's naming service.
package hosts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/internal/kit"
)

// Host is one target of a deploy.
type Host struct {
	Name string `json:"name" yaml:"name"`
	// Addr is the host's deploy agent, host:port (7171 by default).
	Addr   string            `json:"addr,omitempty" yaml:"addr"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels"`
}

// Source lists the hosts of an app in an environment, sorted by name.
type Source interface {
	Hosts(ctx context.Context, app, env string) ([]Host, error)
}

// ErrUnknownApp says a source has no hosts for the app and environment.
var ErrUnknownApp = errors.New("no hosts for this app and environment")

// file is the static hosts file: apps: {APP: {ENV: [host, ...]}}.
type file struct {
	Apps map[string]map[string][]Host `yaml:"apps"`
}

// Parse reads a static hosts file's content.
func Parse(name string, data []byte) (map[string]map[string][]Host, error) {
	var f file
	if err := kit.ParseStrict(name, data, &f); err != nil {
		return nil, err
	}
	for app, envs := range f.Apps {
		for env, hs := range envs {
			seen := map[string]bool{}
			for i, h := range hs {
				if h.Name == "" {
					return nil, fmt.Errorf("%s: apps.%s.%s[%d]: name is required", name, app, env, i)
				}
				if seen[h.Name] {
					return nil, fmt.Errorf("%s: apps.%s.%s: host %q listed twice", name, app, env, h.Name)
				}
				seen[h.Name] = true
			}
			slices.SortFunc(hs, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
		}
	}
	return f.Apps, nil
}

// static rereads its file whenever the file's modification time or size
// changes, so an edit takes effect at the next deploy without a restart.
type static struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	apps    map[string]map[string][]Host
}

// Static returns a Source backed by a YAML file:
//
//	apps:
//	  web:
//	    prod:
//	      - {name: h1, addr: 127.0.0.1:7171, labels: {rack: a}}
//
// The file is read now (an error is returned if it is invalid) and again
// whenever it changes; a later invalid edit keeps the last good content and
// is reported by Hosts.
func Static(path string) (Source, error) {
	s := &static{path: path}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *static) load() error {
	st, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("hosts file: %w", err)
	}
	if st.ModTime().Equal(s.modTime) && st.Size() == s.size && s.apps != nil {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("hosts file: %w", err)
	}
	apps, err := Parse(s.path, bytes.TrimSpace(data))
	if err != nil {
		return err
	}
	if apps == nil {
		apps = map[string]map[string][]Host{}
	}
	s.apps, s.modTime, s.size = apps, st.ModTime(), st.Size()
	return nil
}

func (s *static) Hosts(_ context.Context, app, env string) ([]Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.load(); err != nil {
		return nil, err
	}
	hs, ok := s.apps[app][env]
	if !ok {
		return nil, fmt.Errorf("%s/%s: %w", app, env, ErrUnknownApp)
	}
	return cloneHosts(hs), nil
}

func cloneHosts(hs []Host) []Host {
	out := make([]Host, len(hs))
	for i, h := range hs {
		out[i] = Host{Name: h.Name, Addr: h.Addr}
		if h.Labels != nil {
			out[i].Labels = make(map[string]string, len(h.Labels))
			for k, v := range h.Labels {
				out[i].Labels[k] = v
			}
		}
	}
	return out
}

// DeployAddrLabel, when a configd host carries it, names the host's deploy
// agent (host:port); otherwise the host's registered address is used.
const DeployAddrLabel = "deploy_addr"

type configd struct {
	remote *client.Remote
	err    error
}

// Configd returns a Source asking configd's naming service
// (GET {baseURL}/v1/apps/{app}/hosts) for the live hosts of an app. A
// non-empty env keeps the hosts whose label "env" equals it. baseURL may
// list several servers separated by commas (failover).
func Configd(baseURL, token string, httpClient *http.Client) Source {
	r, err := client.NewRemote(strings.Split(baseURL, ","), client.RemoteOptions{Token: token, HTTPClient: httpClient})
	return &configd{remote: r, err: err}
}

func (c *configd) Hosts(ctx context.Context, app, env string) ([]Host, error) {
	if c.err != nil {
		return nil, c.err
	}
	members, err := c.remote.Hosts(ctx, app, false)
	if err != nil {
		return nil, fmt.Errorf("configd hosts of %s: %w", app, err)
	}
	var out []Host
	for _, m := range members {
		if env != "" && m.Labels["env"] != env {
			continue
		}
		h := Host{Name: m.Host, Addr: m.Addr, Labels: m.Labels}
		if a := m.Labels[DeployAddrLabel]; a != "" {
			h.Addr = a
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s/%s: %w", app, env, ErrUnknownApp)
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

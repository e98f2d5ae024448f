package server

import (
	"context"
	"net"

	"github.com/opskit/opskit/configd/client"
)

// ConfigdHosts lists an app's live hosts from configd's naming service.
type ConfigdHosts struct {
	Remote *client.Remote
}

// AppHosts returns the names (or addresses) of the app's live hosts,
// only those labelled env=ENV when env is set.
func (c ConfigdHosts) AppHosts(ctx context.Context, app, env string) ([]string, error) {
	hosts, err := c.Remote.Hosts(ctx, app, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hosts {
		if env != "" && h.Labels["env"] != env {
			continue
		}
		name := h.Host
		if h.Addr != "" {
			if host, _, err := net.SplitHostPort(h.Addr); err == nil {
				name = host
			} else {
				name = h.Addr
			}
		}
		out = append(out, name)
	}
	return out, nil
}

package gateway

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// keyPart is one source of a limit key.
type keyPart struct {
	kind string // ip, host, method, path, route, header, query, cookie
	name string // for header, query, cookie
}

// KeySpec says how a request's key is built: one or more parts joined. A
// request with any part empty has an empty key and is not counted (as nginx
// does with an empty key).
type KeySpec struct{ parts []keyPart }

// ParseKeySpec reads parts separated by "+": ip, host, method, path, route,
// header:NAME, query:NAME, cookie:NAME. Example: "header:X-Api-Key+route".
func ParseKeySpec(s string) (KeySpec, error) {
	var ks KeySpec
	if strings.TrimSpace(s) == "" {
		return ks, fmt.Errorf("key: empty (want ip, host, method, path, route, header:NAME, query:NAME, cookie:NAME, joined with +)")
	}
	for _, p := range strings.Split(s, "+") {
		p = strings.TrimSpace(p)
		kind, name, hasName := strings.Cut(p, ":")
		switch kind {
		case "ip", "host", "method", "path", "route":
			if hasName {
				return ks, fmt.Errorf("key part %q: %s takes no name", p, kind)
			}
		case "header", "query", "cookie":
			if name == "" {
				return ks, fmt.Errorf("key part %q: %s needs a name, e.g. %s:X", p, kind, kind)
			}
			if kind == "header" {
				name = http.CanonicalHeaderKey(name)
			}
		default:
			return ks, fmt.Errorf("key part %q: unknown (want ip, host, method, path, route, header:NAME, query:NAME, cookie:NAME)", p)
		}
		ks.parts = append(ks.parts, keyPart{kind: kind, name: name})
	}
	return ks, nil
}

// String gives the spec back in ParseKeySpec's form.
func (ks KeySpec) String() string {
	parts := make([]string, len(ks.parts))
	for i, p := range ks.parts {
		parts[i] = p.kind
		if p.name != "" {
			parts[i] += ":" + p.name
		}
	}
	return strings.Join(parts, "+")
}

// IsZero reports an unset spec.
func (ks KeySpec) IsZero() bool { return len(ks.parts) == 0 }

// UnmarshalYAML reads the spec from a string.
func (ks *KeySpec) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := ParseKeySpec(s)
	if err != nil {
		return err
	}
	*ks = v
	return nil
}

// requestInfo is what keys are built from.
type requestInfo struct {
	r     *http.Request
	ip    string
	route string
}

// Key builds the request's key; "" if any part is empty.
func (ks KeySpec) key(ri *requestInfo) string {
	if len(ks.parts) == 1 {
		return ks.parts[0].value(ri)
	}
	var b strings.Builder
	for i, p := range ks.parts {
		v := p.value(ri)
		if v == "" {
			return ""
		}
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(v)
	}
	return b.String()
}

func (p keyPart) value(ri *requestInfo) string {
	switch p.kind {
	case "ip":
		return ri.ip
	case "host":
		return ri.r.Host
	case "method":
		return ri.r.Method
	case "path":
		return ri.r.URL.Path
	case "route":
		return ri.route
	case "header":
		return ri.r.Header.Get(p.name)
	case "query":
		return ri.r.URL.Query().Get(p.name)
	case "cookie":
		if c, err := ri.r.Cookie(p.name); err == nil {
			return c.Value
		}
	}
	return ""
}

// TrustedProxies are the networks whose X-Forwarded-For is believed.
type TrustedProxies []netip.Prefix

// ParseTrustedProxies reads CIDRs or single addresses.
func ParseTrustedProxies(list []string) (TrustedProxies, error) {
	var out TrustedProxies
	for _, s := range list {
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("trusted_proxies %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (tp TrustedProxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range tp {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP is the address of the client: the peer, unless the peer is a
// trusted proxy, in which case X-Forwarded-For is walked from the right
// past trusted proxies to the first address that is not one (the way
// nginx's realip module does with real_ip_recursive on). A malformed entry
// stops the walk at the last address believed.
func (tp TrustedProxies) ClientIP(remoteAddr string, xff []string) string {
	p := parsePeer(remoteAddr)
	return tp.clientIP(&p, xff)
}

// peer is a connection's remote address taken apart, once a connection
// rather than once a request.
type peer struct {
	host  string     // the host part, or the whole address if it has none
	split bool       // whether it had a host and a port
	addr  netip.Addr // the host's address; invalid if it is none
}

func parsePeer(remoteAddr string) peer {
	host, _, err := net.SplitHostPort(remoteAddr)
	p := peer{host: host, split: err == nil}
	if err != nil {
		p.host = remoteAddr
	}
	if a, err := netip.ParseAddr(p.host); err == nil {
		p.addr = a
	}
	return p
}

func (tp TrustedProxies) clientIP(p *peer, xff []string) string {
	host, addr := p.host, p.addr
	if !addr.IsValid() {
		return host
	}
	client := addr.Unmap()
	if len(tp) == 0 || !tp.trusts(client) {
		if addr.Is4() {
			return host // as String would write it (ParseAddr takes no other IPv4 form), without a copy
		}
		return client.String()
	}
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return client.String()
			}
			client = a.Unmap()
			if !tp.trusts(client) {
				return client.String()
			}
		}
	}
	return client.String()
}

package gateway

import (
	"os"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	base := "upstreams: {app: {servers: [127.0.0.1:1]}}\n"
	tests := []struct{ name, yaml, want string }{
		{"unknown key", base + "routes: [{name: a, upstream: app, pathprefix: /x}]", "pathprefix"},
		{"no name", base + "routes: [{upstream: app}]", "name is required"},
		{"same name", base + "routes: [{name: a, upstream: app}, {name: a, upstream: app}]", "used twice"},
		{"undefined upstream", base + "routes: [{name: a, upstream: nope}]", `upstream "nope" is not defined`},
		{"undefined zone", base + "routes: [{name: a, upstream: app, limits: [{zone: z}]}]", `zone "z" is not defined`},
		{"rate 0", "zones: {z: {rate: 0r/s, key: ip}}", "rate"},
		{"bucket rate 0", "zones: {z: {mode: bucket, rate: 0/s, burst: 1, key: ip}}", "positive"},
		{"bucket burst 0", "zones: {z: {mode: bucket, rate: 1/s, key: ip}}", "burst 0"},
		{"nginx zone burst", "zones: {z: {rate: 1r/s, burst: 3, key: ip}}", "burst belongs"},
		{"no key", "zones: {z: {rate: 1r/s}}", "key is required"},
		{"bad key", "zones: {z: {rate: 1r/s, key: 'header:'}}", "needs a name"},
		{"bad memory", "zones: {z: {rate: 1r/s, key: ip, memory: lots}}", "size"},
		{"tiny memory", "zones: {z: {rate: 1r/s, key: ip, memory: 10}}", "less than one key"},
		{"mixed modes", base + "zones: {a: {rate: 1r/s, key: ip}, b: {mode: bucket, rate: 1/s, burst: 1, key: ip}}\nroutes: [{name: r, upstream: app, limits: [{zone: a}, {zone: b}]}]", "one route uses one mode"},
		{"delay with nodelay", base + "zones: {a: {rate: 1r/s, key: ip}}\nroutes: [{name: r, upstream: app, limits: [{zone: a, burst: 5, delay: 2, nodelay: true}]}]", "delay and nodelay"},
		{"bad server", "upstreams: {app: {servers: [localhost]}}", "host:port"},
		{"hash without key", "upstreams: {app: {servers: [a:1], balance: hash}}", "hash_key"},
		{"bad status", base + "routes: [{name: a, upstream: app, status: 200}]", "status 200"},
		{"bad proxies", "trusted_proxies: [nonsense]", "trusted_proxies"},
		{"bad adaptive", "upstreams: {app: {servers: [a:1], adaptive: {algorithm: vegas}}}", "vegas"},
	}
	for _, tc := range tests {
		_, err := Parse("r.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"10MB": 10 << 20, "64k": 64 << 10, "1g": 1 << 30, "1000": 1000, "2Kb": 2048} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("%s = %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "-1", "1t", "k", "99999999999g"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExampleParses(t *testing.T) {
	c, err := Parse("example", []byte(exampleRoutes))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 2 || c.Zones["perip"].maxKeys() != (10<<20)/BytesPerKey {
		t.Fatalf("%+v", c)
	}
}

const exampleRoutes = `
trusted_proxies: [10.0.0.0/8]
zones:
  perip: {rate: 10r/s, key: ip, memory: 10MB}
  perkey: {mode: bucket, rate: 100/s, burst: 20, key: header:X-Api-Key, idle_expiry: 10m}
upstreams:
  app:
    servers: [127.0.0.1:9001, 127.0.0.1:9002]
    balance: least_conn
    health_check: {path: /healthz, interval: 2s, fails: 2, passes: 1}
    retries: 1
routes:
  - name: api
    path_prefix: /api/
    methods: [GET, POST]
    upstream: app
    limits: [{zone: perip, burst: 5, delay: 2}]
  - name: partner
    host: partner.example.com
    headers: {X-Api-Key: ""}
    upstream: app
    limits: [{zone: perkey}]
`

func FuzzParse(f *testing.F) {
	f.Add([]byte(exampleRoutes))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		// Whatever parses must build.
		g := New(Options{})
		if err := g.Load(c); err != nil {
			t.Fatalf("parsed but does not load: %v", err)
		}
		g.Close()
	})
}

func TestDemoRoutesFileLoads(t *testing.T) {
	data, err := os.ReadFile("../examples/demo-routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("demo-routes.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{})
	defer g.Close()
	if err := g.Load(c); err != nil {
		t.Fatal(err)
	}
}

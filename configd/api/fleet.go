package api

import (
	"encoding/json"
	"time"
)

// DaemonRegistration is what an opskit daemon started with --configd sends
// to POST /v1/fleet/daemons when it starts and then as its heartbeat.
type DaemonRegistration struct {
	// ID names the instance: the HOST:PORT of its main listener.
	ID string `json:"id"`
	// Kind is the daemon's name: collector, transfer, judge, ...
	Kind    string `json:"kind"`
	Host    string `json:"host"`
	Version string `json:"version"`
	PID     int    `json:"pid"`
	// Addr is the main HTTP listener (metrics, health, admin), HOST:PORT.
	Addr string `json:"addr"`
	// Listeners are the daemon's other listeners by name (graphite, proxy,
	// ...), HOST:PORT each; the topology matches hop targets against them.
	Listeners map[string]string `json:"listeners,omitempty"`
	Started   time.Time         `json:"started"`
	// HeartbeatSeconds is how often the daemon heartbeats; configd waits
	// at least three of them before calling it down.
	HeartbeatSeconds float64 `json:"heartbeat_seconds,omitempty"`
}

// Fleet daemon states.
const (
	DaemonUp      = "up"      // heartbeating
	DaemonDown    = "down"    // missed its heartbeats (crashed, killed, cut off)
	DaemonStopped = "stopped" // deregistered on a graceful stop
)

// FleetDaemon is one registered daemon as GET /v1/fleet lists it: what it
// registered, its membership state, and what configd last scraped from it.
type FleetDaemon struct {
	DaemonRegistration
	State    string    `json:"state"`
	Joined   time.Time `json:"joined"`
	LastSeen time.Time `json:"last_seen"`
	// UptimeSeconds is now minus Started while up, else 0.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Stats are from the newest scrape; nil before the first one.
	Stats *DaemonStats `json:"stats,omitempty"`
}

// Health values of a scraped daemon.
const (
	HealthOK          = "ok"          // /healthz and /readyz answer 200
	HealthNotReady    = "not_ready"   // alive, /readyz answers 503
	HealthUnreachable = "unreachable" // /healthz did not answer
)

// DaemonStats are read from a daemon's /metrics, /healthz and /readyz.
type DaemonStats struct {
	Scraped time.Time `json:"scraped"`
	Health  string    `json:"health"`
	// Detail says why a daemon is not ok (the /readyz text or the error).
	Detail     string  `json:"detail,omitempty"`
	HeapBytes  float64 `json:"heap_bytes"`
	Goroutines float64 `json:"goroutines"`
	// Rates are per second over the last two scrapes, by name: points/s,
	// lines/s, alerts/s, ... depending on the kind.
	Rates map[string]float64 `json:"rates,omitempty"`
	// Hops are the daemon's flows to its downstreams.
	Hops []HopStats `json:"hops,omitempty"`
}

// HopStats is one downstream flow of a daemon, from its
// opskit_hop_items_total and opskit_hop_latency_seconds_total series.
type HopStats struct {
	// To is the downstream as the daemon configured it (HOST:PORT, or
	// kafka://BROKER).
	To string `json:"to"`
	// ItemsPerSecond acknowledged by the next hop.
	ItemsPerSecond float64 `json:"items_per_second"`
	// LatencySeconds is the mean per-item latency over the last interval
	// (0 when no item passed).
	LatencySeconds float64 `json:"latency_seconds"`
	// ItemsTotal is the counter's current value.
	ItemsTotal float64 `json:"items_total"`
}

// FleetEvent is a change of a daemon's membership: join (first
// registration), rejoin (registered again after down or stopped), leave
// (deregistered, or missed its heartbeats: see Reason).
type FleetEvent struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	ID     string    `json:"id"`
	Kind   string    `json:"kind"`
	Host   string    `json:"host"`
	Reason string    `json:"reason,omitempty"` // for leave: stopped or timeout
}

// FleetEventsResponse answers GET /v1/fleet/events.
type FleetEventsResponse struct {
	Last   int64        `json:"last"`
	Events []FleetEvent `json:"events"`
	Gone   bool         `json:"gone,omitempty"`
}

// FleetSendRequest is the body of POST /v1/fleet/send: run an admin
// command on the chosen daemons.
type FleetSendRequest struct {
	// Dest chooses daemons: all, a kind, a host name or an instance id.
	Dest string `json:"dest"`
	// Command is loglevel, reload, stop or a daemon's own admin command.
	Command string   `json:"command"`
	Args    []string `json:"args,omitempty"`
}

// FleetSendResult is one daemon's answer to a broadcast command.
type FleetSendResult struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Host string `json:"host"`
	OK   bool   `json:"ok"`
	// Status is the daemon's HTTP status (0 when it was not reached).
	Status int `json:"status"`
	// Answer is the daemon's JSON answer, when it gave one.
	Answer json.RawMessage `json:"answer,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// FleetSendResponse answers POST /v1/fleet/send.
type FleetSendResponse struct {
	Results []FleetSendResult `json:"results"`
}

// Topology is the live graph of the fleet: daemons and the flows between
// them, from the hop statistics configd scrapes.
type Topology struct {
	Generated time.Time      `json:"generated"`
	Nodes     []TopologyNode `json:"nodes"`
	Edges     []TopologyEdge `json:"edges"`
}

// TopologyNode is a daemon or an external endpoint (Kafka, a webhook
// receiver, an unregistered upstream) that a daemon sends to.
type TopologyNode struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"` // daemon kind, or "external"
	Host     string `json:"host,omitempty"`
	State    string `json:"state,omitempty"`  // daemons only
	Health   string `json:"health,omitempty"` // daemons only
	External bool   `json:"external,omitempty"`
	// Isolated nodes neither send to nor receive from any other node.
	Isolated bool `json:"isolated"`
}

// TopologyEdge is one flow.
type TopologyEdge struct {
	From           string  `json:"from"`
	To             string  `json:"to"`
	Target         string  `json:"target"` // the `to` label as the sender configured it
	ItemsPerSecond float64 `json:"items_per_second"`
	LatencySeconds float64 `json:"latency_seconds"`
}

package store

import (
	"time"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deployer/plan"
)

// Deploy states.
const (
	Queued     = "queued"
	Running    = "running"
	Paused     = "paused"
	Succeeded  = "succeeded"
	Failed     = "failed"
	RolledBack = "rolled_back"
	Aborted    = "aborted"
	Cancelled  = "cancelled"
)

// Active says a deploy holds its app and environment: no other starts
// until it ends.
func Active(state string) bool { return state == Running || state == Paused }

// Terminal says a deploy has ended (retry may queue it again).
func Terminal(state string) bool {
	switch state {
	case Succeeded, Failed, RolledBack, Aborted, Cancelled:
		return true
	}
	return false
}

// Deploy kinds.
const (
	KindDeploy   = "deploy"
	KindRollback = "rollback"
)

// Phases of a running deploy.
const (
	PhaseRollout     = ""
	PhaseRollingBack = "rolling_back"
)

// Deploy is one release of one app to one environment's hosts, with its
// per-host progress.
type Deploy struct {
	ID   string `json:"id"`
	Seq  int64  `json:"seq"`
	Kind string `json:"kind"`
	// Priority deploys (rollbacks) start before the others queued.
	Priority  bool   `json:"priority,omitempty"`
	App       string `json:"app"`
	Env       string `json:"env"`
	Version   string `json:"version,omitempty"`
	Artifact  string `json:"artifact,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Signature string `json:"signature,omitempty"`
	User      string `json:"user"`
	// Strategy is the app's strategy when the deploy was submitted.
	Strategy plan.Strategy `json:"strategy"`
	State    string        `json:"state"`
	Phase    string        `json:"phase,omitempty"`
	// Attempt counts retries (1 for the first run).
	Attempt int `json:"attempt"`
	// Batch is the batch under way (0-based); BatchSizes cut Hosts.
	Batch        int       `json:"batch"`
	BatchSizes   []int     `json:"batch_sizes,omitempty"`
	BatchStarted time.Time `json:"batch_started,omitzero"`
	// GateSince is when the current batch's PromQL gate started holding.
	GateSince  time.Time `json:"gate_since,omitzero"`
	GatePassed bool      `json:"gate_passed,omitempty"`
	// PauseUntil ends a timed pause; AwaitingPromote waits for promote;
	// Held is a failure kept for a person (on_failure: hold).
	PauseUntil      time.Time  `json:"pause_until,omitzero"`
	AwaitingPromote bool       `json:"awaiting_promote,omitempty"`
	Held            bool       `json:"held,omitempty"`
	Hosts           []HostStep `json:"hosts"`
	Error           string     `json:"error,omitempty"`
	Created         time.Time  `json:"created"`
	Started         time.Time  `json:"started,omitzero"`
	Finished        time.Time  `json:"finished,omitzero"`
	// EventSeq is the last event's number.
	EventSeq int64 `json:"event_seq"`
}

// Host step states.
const (
	StepPending    = "pending"
	StepDispatched = "dispatched"
	StepRunning    = "running"
	StepDone       = "done"
	StepFailed     = "failed"
	// StepSkipped is a rollback with nowhere to go (no previous release).
	StepSkipped = "skipped"
)

// Final says a host step has its outcome.
func Final(state string) bool {
	return state == StepDone || state == StepFailed || state == StepSkipped
}

// HostStep is one host's part of a deploy.
type HostStep struct {
	Host  string `json:"host"`
	Addr  string `json:"addr,omitempty"`
	Batch int    `json:"batch"`
	// Version is the release this host goes to.
	Version  string    `json:"version"`
	State    string    `json:"state"`
	Attempt  int       `json:"attempt"`
	TaskID   string    `json:"task_id,omitempty"`
	Sent     time.Time `json:"sent,omitzero"`
	Deadline time.Time `json:"deadline,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Previous is the release current on the host before this deploy's
	// task, as the agent recorded it: the one a rollback goes back to.
	Previous string `json:"previous,omitempty"`
	// Direct says the agent's own rollback API was asked to switch to
	// Version (a rollback to a release whose package deployer does not
	// know).
	Direct bool `json:"direct,omitempty"`
	// Changed says the host now runs Version because of this deploy.
	Changed bool         `json:"changed,omitempty"`
	Result  *AgentResult `json:"result,omitempty"`
	Error   string       `json:"error,omitempty"`
	// Rollback, when set, is this host's way back to Previous.
	Rollback *RollbackStep `json:"rollback,omitempty"`
}

// RollbackStep is one host's rollback to its previous release.
type RollbackStep struct {
	Version string `json:"version"`
	State   string `json:"state"` // pending, dispatched, running, done, failed, skipped
	TaskID  string `json:"task_id,omitempty"`
	// Direct says the agent's own rollback API was used (the previous
	// release's package is not known to deployer).
	Direct   bool         `json:"direct,omitempty"`
	Sent     time.Time    `json:"sent,omitzero"`
	Deadline time.Time    `json:"deadline,omitzero"`
	Result   *AgentResult `json:"result,omitempty"`
	Error    string       `json:"error,omitempty"`
}

// Event is one thing that happened to a deploy, for `submit --wait` and
// the web page.
type Event struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Deploy string    `json:"deploy"`
	// Kind: state, batch, dispatched, step, done, failed, gate,
	// rollback_dispatched, rolled_back, rollback_failed.
	Kind    string `json:"kind"`
	Host    string `json:"host,omitempty"`
	Batch   int    `json:"batch"`
	TaskID  string `json:"task_id,omitempty"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"`
	Step    string `json:"step,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// AuditEntry records one request that changed something, or tried to.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Action string    `json:"action"`
	App    string    `json:"app,omitempty"`
	Env    string    `json:"env,omitempty"`
	Deploy string    `json:"deploy,omitempty"`
	Detail string    `json:"detail,omitempty"`
	// Result is "ok" or the error.
	Result string `json:"result"`
}

// Release is a version's package as submitted, kept so that a rollback can
// send it again.
type Release struct {
	App       string    `json:"app"`
	Version   string    `json:"version"`
	Artifact  string    `json:"artifact"`
	SHA256    string    `json:"sha256"`
	Signature string    `json:"signature,omitempty"`
	Added     time.Time `json:"added"`
}

// Lease says which deployer instance drives deploys. Token grows with each
// new holder; every state write carries it and is refused once another
// instance has taken the lease.
type Lease struct {
	Holder  string    `json:"holder"`
	Token   uint64    `json:"token"`
	Expires time.Time `json:"expires"`
}

// TaskRef finds the deploy and host of a task id.
type TaskRef struct {
	Deploy   string `json:"deploy"`
	Host     string `json:"host"`
	Rollback bool   `json:"rollback,omitempty"`
}

// AgentResult is what an agent last reported of a task: its Result without
// the task, which the host step already names (kept small: a deploy's
// record holds one per host).
type AgentResult struct {
	State      string         `json:"state"`
	Error      string         `json:"error,omitempty"`
	Previous   string         `json:"previous,omitempty"`
	RolledBack bool           `json:"rolled_back,omitempty"`
	Replayed   bool           `json:"replayed,omitempty"`
	Steps      []release.Step `json:"steps,omitempty"`
	Started    time.Time      `json:"started,omitzero"`
	Finished   time.Time      `json:"finished,omitzero"`
}

// NewAgentResult keeps what a host step needs of an agent's result.
func NewAgentResult(r release.Result) *AgentResult {
	return &AgentResult{State: r.State, Error: r.Error, Previous: r.Previous, RolledBack: r.RolledBack,
		Replayed: r.Replayed, Steps: r.Steps, Started: r.Started, Finished: r.Finished}
}

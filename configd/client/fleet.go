package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// Fleet lists the opskit daemons registered with configd, with what
// configd last scraped from each.
func (r *Remote) Fleet(ctx context.Context) ([]api.FleetDaemon, error) {
	var out []api.FleetDaemon
	_, err := r.getJSON(ctx, "/v1/fleet", &out)
	return out, err
}

// FleetSend runs an admin command on the daemons req.Dest chooses (admin
// only). A daemon that failed is a result with OK false, not an error.
func (r *Remote) FleetSend(ctx context.Context, req api.FleetSendRequest) (api.FleetSendResponse, error) {
	var out api.FleetSendResponse
	err := r.sendJSON(ctx, http.MethodPost, "/v1/fleet/send", req, &out)
	return out, err
}

// Topology returns the fleet's live graph of daemons and flows.
func (r *Remote) Topology(ctx context.Context) (api.Topology, error) {
	var out api.Topology
	_, err := r.getJSON(ctx, "/v1/topology", &out)
	return out, err
}

// FleetEvents long-polls daemon membership events after seq; timeout 0
// answers at once.
func (r *Remote) FleetEvents(ctx context.Context, after int64, timeout time.Duration) (api.FleetEventsResponse, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "timeout": {timeout.String()}}
	var out api.FleetEventsResponse
	_, err := r.getJSON(ctx, "/v1/fleet/events?"+q.Encode(), &out)
	return out, err
}

package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// follow keeps this replica's store in step with the primary: it long-polls
// the primary's watch for changes after its own rev, then copies the
// changed namespace heads and their new releases, oldest change first, so
// that the local rev never passes a change not yet copied.
func (s *Server) follow(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.followOnce(ctx)
		if s.cfg.FollowState != nil {
			s.cfg.FollowState(err)
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("following the primary", "primary", s.primary.String(), "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff + rand.N(backoff/2+1)):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (s *Server) followOnce(ctx context.Context) error {
	rev, err := s.store.Rev()
	if err != nil {
		return err
	}
	var changes api.RevChanges
	status, err := s.getPrimary(ctx, "/v1/watch?rev="+strconv.FormatInt(rev, 10)+"&timeout="+s.cfg.WatchTimeout.String(), &changes)
	if err != nil || status == http.StatusNotModified {
		return err
	}
	heads := make([]api.Namespace, 0, len(changes.Namespaces))
	for _, name := range changes.Namespaces {
		var h api.Namespace
		if _, err := s.getPrimary(ctx, "/v1/ns/"+name, &h); err != nil {
			return err
		}
		heads = append(heads, h)
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].Rev < heads[j].Rev })
	for _, h := range heads {
		old, _ := s.head(h.Name)
		var rels []api.Release
		if h.Latest > old.Latest {
			q := url.Values{"after": {strconv.FormatInt(old.Latest, 10)}, "content": {"1"}}
			if _, err := s.getPrimary(ctx, "/v1/ns/"+h.Name+"/releases?"+q.Encode(), &rels); err != nil {
				return err
			}
		}
		if err := s.store.Replicate(h, rels); err != nil {
			return err
		}
		s.changed(h)
		s.log.Debug("replicated", "namespace", h.Name, "rev", h.Rev, "releases", len(rels))
	}
	return nil
}

func (s *Server) getPrimary(ctx context.Context, path string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.primary.String()+path, nil)
	if err != nil {
		return 0, err
	}
	if s.cfg.FollowToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.FollowToken)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return 0, fmt.Errorf("primary %s: %w", path, err)
		}
	case http.StatusNotModified:
	default:
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return 0, fmt.Errorf("primary %s: %s: %s", path, resp.Status, e.Error)
	}
	return resp.StatusCode, nil
}

package cdssim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/coder/websocket"
)

// wsBuffer is the per-connection event backlog; beyond it events are dropped (and counted),
// as a real server drops events for a slow client rather than stalling everyone.
const wsBuffer = 256

// wsSub is one subscribed websocket connection with the filter the API would apply.
type wsSub struct {
	v2 bool
	ch chan []byte

	// v1: the registered service's region rules and the client's hatchery_type filter.
	serviceRegion  *string
	ignoreNoRegion bool
	hatcheryType   string

	// v2: granted region, hatchery type, OS/arch list.
	region    string
	modelType string
	osarch    []string
}

func (sub *wsSub) matchV1(j *v1JobState) bool {
	if j.status != StatusWaiting {
		return false
	}
	if sub.hatcheryType != "" && j.job.ModelType != "" && j.job.ModelType != sub.hatcheryType {
		return false
	}
	if sub.serviceRegion != nil && *sub.serviceRegion == j.job.Region {
		return true
	}
	return j.job.Region == "" && !sub.ignoreNoRegion
}

func (sub *wsSub) matchV2(j *v2JobState) bool {
	return j.job.Region == sub.region && j.job.ModelType == sub.modelType && slices.Contains(sub.osarch, j.job.ModelOSArch)
}

func (s *Server) sendLocked(sub *wsSub, msg []byte) {
	select {
	case sub.ch <- msg:
	default:
		s.wsDropped++
	}
}

func (s *Server) broadcastV1Locked(j *v1JobState) {
	hostname, _ := os.Hostname()
	msg, err := json.Marshal(wireWSEvent{Status: "OK", Event: &wireEvent{
		Timestamp:         s.now(),
		Hostname:          hostname,
		CDSName:           "cdssim",
		EventType:         "sdk.EventRunWorkflowJob",
		Status:            j.status,
		Payload:           wireJobEventPayload{ID: j.job.ID, Status: j.status},
		ProjectKey:        j.job.ProjectKey,
		WorkflowName:      j.job.WorkflowName,
		WorkflowNodeRunID: j.job.WorkflowNodeRunID,
		Region:            j.job.Region,
		ModelType:         j.job.ModelType,
	}})
	if err != nil {
		return
	}
	for sub := range s.subs {
		if !sub.v2 && sub.matchV1(j) {
			s.sendLocked(sub, msg)
		}
	}
}

func (s *Server) broadcastV2Locked(j *v2JobState) {
	msg, err := json.Marshal(wireV2QueueEvent{
		JobRunID: j.job.ID, Region: j.job.Region, ModelType: j.job.ModelType, ModelOSArch: j.job.ModelOSArch,
		ProjectKey: j.job.ProjectKey, WorkflowName: j.job.WorkflowName, JobID: j.job.JobID, RunNumber: j.job.RunNumber,
	})
	if err != nil {
		return
	}
	for sub := range s.subs {
		if sub.v2 && sub.matchV2(j) {
			s.sendLocked(sub, msg)
		}
	}
}

// WebsocketClients counts the subscribed websocket connections: v1 ones count once their
// filter has been received.
func (s *Server) WebsocketClients() (v1, v2 int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub := range s.subs {
		if sub.v2 {
			v2++
		} else {
			v1++
		}
	}
	return v1, v2
}

// WebsocketEventsDropped counts events not delivered because a client's backlog was full.
func (s *Server) WebsocketEventsDropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wsDropped
}

func (s *Server) subscribe(sub *wsSub) func() {
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.notifyLocked()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// parseFilters accepts the array the hatchery sends (spec §7.1) or a single filter object.
func parseFilters(data []byte) ([]wireWSFilter, error) {
	var filters []wireWSFilter
	t := bytes.TrimSpace(data)
	if len(t) > 0 && t[0] == '{' {
		var f wireWSFilter
		if err := json.Unmarshal(t, &f); err != nil {
			return nil, fmt.Errorf("invalid filter: %w", err)
		}
		filters = []wireWSFilter{f}
	} else if err := json.Unmarshal(t, &filters); err != nil {
		return nil, fmt.Errorf("invalid filter: %w", err)
	}
	if len(filters) == 0 {
		return nil, errors.New("empty filter list")
	}
	for _, f := range filters {
		if f.Type != "queue" {
			return nil, fmt.Errorf("unsupported filter type %q", f.Type)
		}
	}
	return filters, nil
}

// serveWS runs one accepted connection: a reader goroutine (handles close frames and notices
// a vanished client) and the writer loop below, which ends on server close or client loss.
func (s *Server) serveWS(c *websocket.Conn, sub *wsSub, onMessage func(data []byte)) {
	readCtx, readCancel := context.WithCancel(context.Background())
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, data, err := c.Read(readCtx)
			if err != nil {
				return
			}
			if onMessage != nil {
				onMessage(data)
			}
		}
	}()
	defer func() {
		readCancel()
		<-readDone
	}()
	unsubscribe := s.subscribe(sub)
	defer unsubscribe()
	for {
		select {
		case <-readDone:
			return
		case <-s.ctx.Done():
			// Going away lets the client reconnect, as it does when the real API restarts.
			_ = c.Close(websocket.StatusGoingAway, "cdssim closing")
			return
		case msg := <-sub.ch:
			wctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			err := c.Write(wctx, websocket.MessageText, msg)
			cancel()
			if err != nil {
				return
			}
		}
	}
}

func (s *Server) handleV1WS(w http.ResponseWriter, r *http.Request, sess *session) {
	done, ok := s.track()
	if !ok {
		writeErr(w, errUnknown, "server closing")
		return
	}
	defer done()
	s.mu.Lock()
	svc := s.services[sess.name]
	sub := &wsSub{ch: make(chan []byte, wsBuffer)}
	if svc != nil {
		sub.serviceRegion = svc.Region
		sub.ignoreNoRegion = svc.IgnoreJobWithNoRegion != nil && *svc.IgnoreJobWithNoRegion
	}
	s.mu.Unlock()
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	// The subscription starts once a valid filter arrives; until then KO answers invalid ones.
	for {
		_, data, err := c.Read(s.ctx)
		if err != nil {
			return
		}
		filters, err := parseFilters(data)
		if err == nil {
			sub.hatcheryType = filters[0].HatcheryType
			break
		}
		ko, _ := json.Marshal(wireWSEvent{Status: "KO", Error: err.Error()})
		if err := c.Write(s.ctx, websocket.MessageText, ko); err != nil {
			return
		}
	}
	s.serveWS(c, sub, nil)
}

func (s *Server) handleV2WS(w http.ResponseWriter, r *http.Request, sess *session) {
	done, ok := s.track()
	if !ok {
		writeErr(w, errUnknown, "server closing")
		return
	}
	defer done()
	s.mu.Lock()
	sub := &wsSub{v2: true, ch: make(chan []byte, wsBuffer), region: s.opts.Region, modelType: s.opts.ModelType}
	if h := s.hatcheries[sess.name]; h != nil {
		sub.modelType = h.Type
		sub.osarch = topLevelOSArch(h.Config)
	}
	s.mu.Unlock()
	if len(sub.osarch) == 0 {
		// Quirk Q3: the API looks for a top-level osArch key, which the hatchery nests, and
		// falls back to linux/amd64.
		sub.osarch = []string{"linux/amd64"}
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	s.serveWS(c, sub, nil)
}

func topLevelOSArch(config json.RawMessage) []string {
	var top struct {
		OSArch []string `json:"osArch"`
	}
	_ = json.Unmarshal(config, &top)
	return top.OSArch
}

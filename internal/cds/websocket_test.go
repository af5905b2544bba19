package cds

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestListenV1SendsFilterDecodesEventsAndReconnects(t *testing.T) {
	clock := newTestClock()
	f := newFakeAPI(t, clock)
	p := &pauses{}
	c := signedIn(t, f, p, false)

	filters := make(chan string, 4)
	auths := make(chan string, 4)
	var mu sync.Mutex
	conns := 0
	f.handle("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		auths <- r.Header.Get("Authorization")
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer conn.CloseNow()
		mu.Lock()
		conns++
		n := conns
		mu.Unlock()
		_, msg, err := conn.Read(r.Context())
		if err != nil {
			t.Errorf("read filter: %v", err)
			return
		}
		filters <- string(msg)
		if n == 1 {
			_ = conn.Write(r.Context(), websocket.MessageText, []byte(`not json`))
			_ = conn.Write(r.Context(), websocket.MessageText, []byte(
				`{"status":"OK","error":"","event":{"type_event":"sdk.EventRunWorkflowJob","status":"Waiting","payload":{"id":98765,"status":"Waiting","start":0,"done":0},"timestamp":"2025-01-10T08:00:01.5Z","region":"eu","unknown":true}}`))
			// The server goes away: the client must reconnect and send its filter again.
			conn.Close(websocket.StatusGoingAway, "bye")
			return
		}
		_ = conn.Write(r.Context(), websocket.MessageText, []byte(`{"status":"KO","error":"bad filter"}`))
		_, _, _ = conn.Read(r.Context()) // hold the connection until the client leaves
	})

	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan WebsocketEvent, 4)
	done := make(chan error, 1)
	go func() { done <- c.ListenV1(ctx, events) }()

	ev := <-events
	job, err := ev.Event.RunWorkflowJob()
	if ev.Status != "OK" || ev.Event.Status != StatusWaiting || ev.Event.Region != "eu" || err != nil || job.ID != 98765 {
		t.Errorf("first event = %+v, payload %+v, %v", ev, job, err)
	}
	ev = <-events
	if ev.Status != WebsocketStatusKO || ev.Error != "bad filter" {
		t.Errorf("second event = %+v", ev)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ListenV1 returned %v, want context.Canceled", err)
	}

	wantFilter := `[{"type":"queue","project_key":"","application_name":"","pipeline_name":"","environment_name":"",` +
		`"workflow_name":"","workflow_run_num":0,"workflow_node_run_id":0,"operation_uuid":"","hatchery_type":"vsphere"}]`
	for i := range 2 {
		if got := <-filters; got != wantFilter {
			t.Errorf("filter %d:\n got %s\nwant %s", i, got, wantFilter)
		}
		if got := <-auths; got != "Bearer "+c.sessionToken() {
			t.Errorf("handshake %d Authorization = %q", i, got)
		}
	}
	ps := p.Get()
	if len(ps) == 0 || ps[0] != time.Second {
		t.Errorf("reconnect pauses = %v, want 1s first", ps)
	}
	if n := len(f.signinRequests()); n != 1 {
		t.Errorf("sign-ins = %d, want 1 (session was valid)", n)
	}
}

func TestListenV2ResignsInThroughV2BeforeDialling(t *testing.T) {
	clock := newTestClock()
	f := newFakeAPI(t, clock)
	c := signedIn(t, f, &pauses{}, true)
	clock.Advance(2 * time.Hour)

	handshake := make(chan http.Header, 1)
	f.handle("GET /v2/hatchery/ws", func(w http.ResponseWriter, r *http.Request) {
		handshake <- r.Header.Clone()
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer conn.CloseNow()
		_ = conn.Write(r.Context(), websocket.MessageText, []byte(
			`{"job_run_id":"0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11","region":"granted-region","model_type":"vsphere","model_osarch":"linux/amd64",`+
				`"project_key":"PRJ","workflow_name":"wf","job_id":"build","run_number":4,"extra":"x"}`))
		// The v2 client sends nothing: the next read only ends when the client leaves.
		if typ, msg, err := conn.Read(r.Context()); err == nil {
			t.Errorf("client sent %v %s on the v2 stream", typ, msg)
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan WebsocketJobQueueEvent, 1)
	done := make(chan error, 1)
	go func() { done <- c.ListenV2(ctx, events) }()

	ev := <-events
	want := WebsocketJobQueueEvent{JobRunID: "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11", Region: "granted-region", ModelType: "vsphere",
		ModelOSArch: "linux/amd64", ProjectKey: "PRJ", WorkflowName: "wf", JobID: "build", RunNumber: 4}
	if ev != want {
		t.Errorf("event = %+v", ev)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ListenV2 returned %v", err)
	}

	s := f.signinRequests()
	if len(s) != 2 || s[1].Path != pathV2Signin || string(s[1].Body) != string(s[0].Body) {
		t.Fatalf("re-sign-in before dialling: %d sign-ins, last %+v", len(s), s[len(s)-1])
	}
	h := <-handshake
	wantDate := clock.Now().Format(DateLayout)
	if h.Get("Authorization") != "Bearer "+c.sessionToken() || h.Get("Date") != wantDate || h.Get("X-CDS-RemoteTime") != wantDate {
		t.Errorf("handshake headers: %v", h)
	}
}

func TestListenRetriesDialFailuresWithPause(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	p := &pauses{}
	c := signedIn(t, f, p, true)
	attempts := make(chan struct{}, 10)
	f.handle("GET /v2/hatchery/ws", func(w http.ResponseWriter, r *http.Request) {
		attempts <- struct{}{}
		w.WriteHeader(http.StatusUnauthorized)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.ListenV2(ctx, make(chan WebsocketJobQueueEvent)) }()
	<-attempts
	<-attempts
	cancel()
	<-done
	// Each failed dial is followed by a 1 s pause; the 401 cleared the session so the next
	// attempt signed in again.
	for _, d := range p.Get() {
		if d != time.Second {
			t.Errorf("pause %v, want 1s", d)
		}
	}
	if n := len(f.signinRequests()); n < 2 {
		t.Errorf("sign-ins = %d, want a re-sign-in after the 401", n)
	}
}

func TestWSURL(t *testing.T) {
	for in, want := range map[string]string{"http://api:8081": "ws://api:8081", "https://cds.example/api": "wss://cds.example/api"} {
		if got := wsURL(in); got != want {
			t.Errorf("wsURL(%q) = %q, want %q", in, got, want)
		}
	}
}

package simenv

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"maps"
	"net/http"
	"time"

	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// longPollBatch is how long a long poll woken by a change waits before asking the
// simulator, so that the changes of a burst come in one answer (vcsim itself lets updates
// accumulate for 20 ms) and a watcher does not take the simulator at every change.
const longPollBatch = 20 * time.Millisecond

// sdkPaths are the SOAP endpoints the simulator serves; POST requests to them go through
// Env.serveSDK. A method-qualified pattern is more specific than the simulator's own
// "/sdk" registration, so both live in one ServeMux.
var sdkPaths = []string{"/sdk", "/sdk/vimService"}

// soapCall is what the HTTP layer reads of a request before the simulator sees it.
type soapCall struct {
	method string
	// For long polls: the collector, the version asked from and MaxWaitSeconds (nil: none).
	this, version string
	maxWait       *int32
}

func isLongPoll(method string) bool {
	return method == "WaitForUpdatesEx"
}

// peekCall reads the method name (the first element inside soapenv:Body) and, for a long
// poll, its collector, version and wait options. A body it cannot read gives an empty
// method: the simulator answers it with its own fault.
func peekCall(body []byte) soapCall {
	d := xml.NewDecoder(bytes.NewReader(body))
	depth := 0
	inBody := false
	for {
		tok, err := d.Token()
		if err != nil {
			return soapCall{}
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if inBody {
				c := soapCall{method: t.Name.Local}
				if isLongPoll(c.method) {
					var req struct {
						This    string `xml:"_this"`
						Version string `xml:"version"`
						MaxWait *int32 `xml:"options>maxWaitSeconds"`
					}
					if err := d.DecodeElement(&req, &t); err == nil {
						c.this, c.version, c.maxWait = req.This, req.Version, req.MaxWait
					}
				}
				return c
			}
			if depth == 1 && t.Name.Local == "Body" {
				inBody = true
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
}

// recorder keeps a response in memory, so that the simulator encodes it (reading its
// objects) under the serializer's mutex while the bytes go to the client after it.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: make(http.Header)} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

func (r *recorder) flush(w http.ResponseWriter) {
	maps.Copy(w.Header(), r.header)
	w.WriteHeader(max(r.code, http.StatusOK))
	// The client may be gone; there is nobody left to tell.
	_, _ = w.Write(r.body.Bytes())
}

// answered tells whether a long-poll attempt has something for the client: updates or
// a fault. Without updates the simulator leaves out the returnval element.
func (r *recorder) answered() bool {
	return r.code != http.StatusOK || bytes.Contains(r.body.Bytes(), []byte("<returnval"))
}

// truncated tells whether the answer was one page of more updates.
func (r *recorder) truncated() bool {
	return bytes.Contains(r.body.Bytes(), []byte("<truncated>true</truncated>"))
}

// installSDKHandler routes the SOAP endpoints through serveSDK. It must run before the
// simulator's server is created.
func (e *Env) installSDKHandler() {
	svc := e.Model.Service
	if svc.ServeMux == nil {
		svc.ServeMux = http.NewServeMux()
	}
	for _, p := range sdkPaths {
		svc.ServeMux.HandleFunc("POST "+p, e.serveSDK)
	}
}

// serveSDK serves one SOAP request: its delay first, with the simulator free for others,
// then the call itself under the serializer; long polls wait for changes outside it.
func (e *Env) serveSDK(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	call := peekCall(body)
	delay, fault := e.hooks.next(call.method)
	if delay > 0 && !e.pause(r.Context(), delay) {
		return // the client gave up
	}
	if isLongPoll(call.method) {
		e.longPoll(w, r, body, call, fault)
		return
	}
	rec := newRecorder()
	e.sim.doCall(call.method, func() {
		e.serveOnce(rec, r, body, call.method, fault)
		if !readOnly(call.method) {
			// Objects of a session (list and container views, filters) change in the
			// session's own registry, which the change feed does not watch: a long poll
			// over a view whose members were just changed must still look again, as a
			// vCenter reports such a change at once.
			e.feed.bump()
		}
	})
	rec.flush(w)
}

// readOnly tells the methods that change nothing a long poll could report.
func readOnly(method string) bool {
	switch method {
	case "RetrieveProperties", "RetrievePropertiesEx", "ContinueRetrievePropertiesEx", "RetrieveServiceContent",
		"QueryEvents", "ReadNextEvents", "ReadPreviousEvents", "CurrentTime":
		return true
	}
	return false
}

// serveOnce has the simulator answer the request into rec; fault, when not nil, is the
// answer instead. It runs under the serializer's mutex.
func (e *Env) serveOnce(rec *recorder, r *http.Request, body []byte, method string, fault types.BaseMethodFault) {
	e.hooks.arm(method, fault)
	defer e.hooks.disarm()
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	e.Model.Service.ServeSDK(rec, req)
}

// pause waits d; false if the client went away meanwhile. Closing the Env ends it early.
func (e *Env) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.closing:
	case <-ctx.Done():
		return false
	}
	return true
}

// pollState is what the last long-poll attempt of one property collector saw.
type pollState struct {
	gen     uint64 // simulator changes counted when it ended
	pending bool   // its answer was truncated: the simulator holds the next page
}

// longPoll serves WaitForUpdatesEx. The simulator only ever sees it with MaxWaitSeconds 0
// (see methodHooks.handle), under the serializer like any call; the waiting for changes
// happens here, without the simulator, and the simulator is asked again only when
// something changed since this collector's last attempt.
func (e *Env) longPoll(w http.ResponseWriter, r *http.Request, body []byte, call soapCall, fault types.BaseMethodFault) {
	// The root property collector is one per session, with the same reference in all.
	key := r.Header.Get("Cookie") + "\x00" + call.this
	final := call.maxWait != nil && *call.maxWait <= 0
	var deadline <-chan time.Time
	if call.maxWait != nil && *call.maxWait > 0 {
		t := time.NewTimer(time.Duration(*call.maxWait) * time.Second)
		defer t.Stop()
		deadline = t.C
	}
	for {
		var rec *recorder
		var changed <-chan struct{}
		e.sim.do(func() {
			gen, ch := e.feed.state()
			st, known := e.sim.polls[key]
			if final || fault != nil || call.version == "" || !known || st.pending || st.gen != gen {
				rec = newRecorder()
				start := time.Now()
				e.serveOnce(rec, r, body, call.method, fault)
				e.sim.addStats(0, time.Since(start))
				fault = nil
				gen, ch = e.feed.state()
				e.sim.polls[key] = pollState{gen: gen, pending: rec.truncated()}
			}
			changed = ch
		})
		if rec != nil && (final || rec.answered()) {
			rec.flush(w)
			return
		}
		select {
		case <-changed:
			if !e.pause(r.Context(), longPollBatch) {
				return
			}
		case <-deadline:
			final = true
		case <-e.closing:
			final = true
		case <-r.Context().Done():
			return
		}
	}
}

// lockedService is the in-memory transport of the Env's own client: the simulator's
// RoundTrip, under the serializer. Calls through it are never delayed nor faulted, and
// must not long-poll (an in-memory WaitForUpdatesEx answers at once).
type lockedService struct {
	e *Env
}

func (l lockedService) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	var err error
	l.e.sim.do(func() {
		err = l.e.Model.Service.RoundTrip(ctx, req, res)
	})
	return err
}

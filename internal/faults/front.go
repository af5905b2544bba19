package faults

import (
	"net/http"
	"net/http/httptest"
	"sync"
)

// FrontMode is how APIFront answers.
type FrontMode int

const (
	// FrontUp passes every request to the API.
	FrontUp FrontMode = iota
	// Front500 answers every request with a 500 and a CDS error body, as an API whose
	// database is gone does.
	Front500
	// FrontHang holds every request without answering until the client gives up or the
	// mode changes (then 503): an API behind an overloaded load balancer.
	FrontHang
)

func (m FrontMode) String() string {
	switch m {
	case FrontUp:
		return "up"
	case Front500:
		return "500"
	case FrontHang:
		return "hang"
	}
	return "FrontMode(?)"
}

// APIFront is an HTTP server in front of the simulated CDS API's handler that can fail
// every request for a while. The hatchery is configured with URL instead of the API's own;
// simulated workers talk to the API in memory and are not affected.
type APIFront struct {
	srv *httptest.Server

	mu     sync.Mutex
	mode   FrontMode
	resume chan struct{} // closed when the mode leaves FrontHang
	failed int
}

// NewAPIFront serves api on a random loopback port.
func NewAPIFront(api http.Handler) *APIFront {
	f := &APIFront{resume: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.serve(w, r, api)
	}))
	return f
}

// URL is the base URL the hatchery must use as api.http.url.
func (f *APIFront) URL() string { return f.srv.URL }

// Set changes how requests are answered; leaving FrontHang answers the held requests.
func (f *APIFront) Set(mode FrontMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode == FrontHang && mode != FrontHang {
		close(f.resume)
		f.resume = make(chan struct{})
	}
	f.mode = mode
}

// Failed is the number of requests answered with an error or held.
func (f *APIFront) Failed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// Close answers the held requests and stops the server.
func (f *APIFront) Close() {
	f.Set(FrontUp)
	f.srv.Close()
}

func (f *APIFront) serve(w http.ResponseWriter, r *http.Request, api http.Handler) {
	f.mu.Lock()
	mode, resume := f.mode, f.resume
	if mode != FrontUp {
		f.failed++
	}
	f.mu.Unlock()
	switch mode {
	case Front500:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"id":1,"status":500,"message":"internal server error"}`))
	case FrontHang:
		select {
		case <-resume:
			http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		case <-r.Context().Done():
		}
	default:
		api.ServeHTTP(w, r)
	}
}

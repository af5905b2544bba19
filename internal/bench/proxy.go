package bench

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
)

// Traffic is what one client exchanged with vCenter: SOAP round trips (HTTP requests) and
// the bytes of the response bodies, per SOAP method.
type Traffic struct {
	Calls         int
	Bytes         int64
	ByMethod      map[string]int
	BytesByMethod map[string]int64
}

// Sub is the traffic between an earlier snapshot old and t.
func (t Traffic) Sub(old Traffic) Traffic {
	out := Traffic{Calls: t.Calls - old.Calls, Bytes: t.Bytes - old.Bytes, ByMethod: map[string]int{}, BytesByMethod: map[string]int64{}}
	for m, n := range t.ByMethod {
		if d := n - old.ByMethod[m]; d != 0 {
			out.ByMethod[m] = d
		}
	}
	for m, n := range t.BytesByMethod {
		if d := n - old.BytesByMethod[m]; d != 0 {
			out.BytesByMethod[m] = d
		}
	}
	return out
}

// vcenterProxy is an HTTPS reverse proxy in front of the simulated vCenter. Each client
// measured gets its own, so that what it counts is that client's traffic only, seen on the
// wire the way vCenter would see it, whatever the client's code does.
type vcenterProxy struct {
	srv *httptest.Server
	// CAFile holds the proxy's certificate, for the client's vsphere.caFile.
	CAFile string

	mu      sync.Mutex
	traffic Traffic
}

// newVCenterProxy starts a proxy to env; dir receives its certificate file. Close it.
func newVCenterProxy(env *simenv.Env, dir string) (*vcenterProxy, error) {
	target := &url.URL{Scheme: env.URL.Scheme, Host: env.URL.Host}
	p := &vcenterProxy{traffic: Traffic{ByMethod: map[string]int{}, BytesByMethod: map[string]int64{}}}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: env.RootCAs, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 256,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = target.Host },
		Transport: transport,
		// Forward each response as it comes: the property collector's long poll must not
		// be held in a buffer.
		FlushInterval: -1,
		// Cancelled long polls are normal here (a client stopping): not worth a line.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewUnstartedServer(p.count(rp))
	p.srv.StartTLS()
	// No colon in the name: govmomi reads caFile as a colon-separated list.
	p.CAFile = filepath.Join(dir, fmt.Sprintf("vcenter-proxy-%d.pem", p.srv.Listener.Addr().(*net.TCPAddr).Port))
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.CAFile, certPEM, 0o600); err != nil {
		p.srv.Close()
		return nil, fmt.Errorf("write the proxy certificate: %w", err)
	}
	return p, nil
}

// Host is the host:port the client must use as vsphere.endpoint.
func (p *vcenterProxy) Host() string { return p.srv.Listener.Addr().String() }

// Snapshot returns the traffic so far.
func (p *vcenterProxy) Snapshot() Traffic {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.traffic
	t.ByMethod = maps.Clone(t.ByMethod)
	t.BytesByMethod = maps.Clone(t.BytesByMethod)
	return t
}

// Close stops the proxy and drops its connections.
func (p *vcenterProxy) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// count counts the request before forwarding it and each response byte before writing
// it, so that once a client has its answer, the call is in the snapshot.
func (p *vcenterProxy) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		method := soapMethod(body)
		if method == "" {
			method = r.Method + " " + r.URL.Path
		}
		p.mu.Lock()
		p.traffic.Calls++
		p.traffic.ByMethod[method]++
		p.mu.Unlock()
		next.ServeHTTP(&countingWriter{ResponseWriter: w, p: p, method: method}, r)
	})
}

// countingWriter counts the response body bytes.
type countingWriter struct {
	http.ResponseWriter
	p      *vcenterProxy
	method string
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.p.mu.Lock()
	c.p.traffic.Bytes += int64(len(b))
	c.p.traffic.BytesByMethod[c.method] += int64(len(b))
	c.p.mu.Unlock()
	return c.ResponseWriter.Write(b)
}

// Flush lets the reverse proxy flush through the counter.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// soapMethod is the name of the first element of the SOAP body ("RetrievePropertiesEx"),
// without its namespace prefix; "" when body is not a SOAP envelope.
func soapMethod(body []byte) string {
	i := bytes.Index(body, []byte("Body"))
	if i < 0 {
		return ""
	}
	rest := body[i:]
	j := bytes.IndexByte(rest, '>')
	if j < 0 {
		return ""
	}
	rest = rest[j+1:]
	k := bytes.IndexByte(rest, '<')
	if k < 0 {
		return ""
	}
	rest = rest[k+1:]
	end := bytes.IndexAny(rest, " />\t\r\n")
	if end <= 0 {
		return ""
	}
	name := rest[:end]
	if c := bytes.IndexByte(name, ':'); c >= 0 {
		name = name[c+1:]
	}
	return string(name)
}

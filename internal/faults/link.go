package faults

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// LinkMode is the state of the network between the hatchery and the vCenter.
type LinkMode int

const (
	// LinkUp relays every connection.
	LinkUp LinkMode = iota
	// LinkRefused closes every connection at once, existing ones included: what a client
	// sees of a vCenter that is down or of a load balancer with no backend (reset, EOF).
	LinkRefused
	// LinkBlackholed accepts connections and never answers, as a vCenter that hangs; the
	// held connections are closed when the mode changes.
	LinkBlackholed
)

func (m LinkMode) String() string {
	switch m {
	case LinkUp:
		return "up"
	case LinkRefused:
		return "refused"
	case LinkBlackholed:
		return "blackholed"
	}
	return fmt.Sprintf("LinkMode(%d)", int(m))
}

// Link is a TCP relay between the hatchery and the simulated vCenter. The hatchery is
// pointed at Addr (same host, another port: the vCenter's certificate still verifies) and
// the scenario cuts the link with Set. It works below TLS, so neither side is changed.
type Link struct {
	ln     net.Listener
	target string

	wg sync.WaitGroup // the accept loop and the relays

	mu     sync.Mutex
	mode   LinkMode
	conns  map[net.Conn]struct{} // both ends of every open relay, and held connections
	cut    chan struct{}         // closed when the mode leaves LinkBlackholed
	cutOff int                   // connections refused or dropped while not up
	closed bool
}

// NewLink listens on a random loopback port and relays to target (host:port).
func NewLink(target string) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the vCenter link: %w", err)
	}
	l := &Link{ln: ln, target: target, conns: make(map[net.Conn]struct{}), cut: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.accept()
	}()
	return l, nil
}

// Addr is the host:port the hatchery must use as its vCenter endpoint.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Set changes the link's state. Leaving LinkUp drops every open connection.
func (l *Link) Set(mode LinkMode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mode == l.mode {
		return
	}
	if l.mode == LinkBlackholed {
		close(l.cut)
		l.cut = make(chan struct{})
	}
	l.mode = mode
	if mode != LinkUp {
		for c := range l.conns {
			_ = c.Close()
			delete(l.conns, c)
		}
	}
}

// CutOff is the number of connections refused, held or dropped while the link was not up.
func (l *Link) CutOff() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cutOff
}

// Close stops the relay and closes every connection.
func (l *Link) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	_ = l.ln.Close()
	for c := range l.conns {
		_ = c.Close()
	}
	if l.mode == LinkBlackholed {
		close(l.cut)
		l.cut = make(chan struct{})
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *Link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		l.mu.Lock()
		mode, cut, closed := l.mode, l.cut, l.closed
		if mode != LinkUp {
			l.cutOff++
		}
		if closed || mode == LinkRefused {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			if mode == LinkBlackholed {
				<-cut
				l.drop(c)
				return
			}
			l.relay(c)
		}()
	}
}

// relay copies both ways between the client and a new connection to the target until
// either side ends or the link is cut.
func (l *Link) relay(c net.Conn) {
	defer l.drop(c)
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		return
	}
	l.mu.Lock()
	if l.mode != LinkUp || l.closed {
		l.mu.Unlock()
		_ = up.Close()
		return
	}
	l.conns[up] = struct{}{}
	l.mu.Unlock()
	defer l.drop(up)
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyThenClose(up, c)
	}()
	copyThenClose(c, up)
	<-done
}

// copyThenClose copies src to dst, then closes both so that the other direction ends too.
// How the copy ended does not matter: the client sees the connection end either way.
func copyThenClose(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = src.Close()
	_ = dst.Close()
}

func (l *Link) drop(c net.Conn) {
	_ = c.Close()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

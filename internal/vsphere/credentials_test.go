package vsphere

import (
	"context"
	"crypto/tls"
	"net/url"
	"testing"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
)

// sessionKey is the key of the client's current vCenter session.
func (c *Client) sessionKey(ctx context.Context) (string, error) {
	s, err := session.NewManager(c.vc).UserSession(ctx)
	if err != nil {
		return "", err
	}
	return s.Key, nil
}

// Credentials are escaped, not pasted into the URL (fix of Q24): a password holding URL
// delimiters logs in, and the simulator only accepts the exact user and password.
func TestCredentialsWithSpecialCharacters(t *testing.T) {
	const user, password = `ci@corp.local`, `p@ss:w/rd%41#?`
	m := simulator.VPX()
	m.Host = 0
	m.Portgroup = 0
	if err := m.Create(); err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(m.Remove)
	m.Service.Listen = &url.URL{User: url.UserPassword(user, password)}
	m.Service.TLS = new(tls.Config)
	srv := m.Service.NewServer()
	t.Cleanup(srv.Close)

	opts := Options{
		Endpoint:   "https://" + srv.URL.Host + "/sdk",
		User:       user,
		Password:   password,
		Datacenter: "DC0",
		Network:    "VM Network",
		Insecure:   true, // vcsim's certificate is self-signed
	}
	c, err := Connect(t.Context(), opts)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if _, err := c.ListVirtualMachinesProperties(t.Context(), "name"); err != nil {
		t.Errorf("list after login: %v", err)
	}
	if err := c.Logout(t.Context()); err != nil {
		t.Errorf("Logout: %v", err)
	}

	opts.Password = "p@ss"
	if c, err := Connect(t.Context(), opts); err == nil {
		_ = c.Close()
		t.Fatal("Connect with a truncated password succeeded: the simulator does not check passwords")
	}
}

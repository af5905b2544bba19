package cds

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// WebSocket numbers of sections 2.6 and 22.5.
const (
	wsReconnectPause   = time.Second
	wsHandshakeTimeout = 10 * time.Second
	// wsReadLimit is above the library's 32 KiB default: a v1 event carries its whole
	// payload and must not kill the connection.
	wsReadLimit = 1 << 20
)

// ListenV1 keeps the v1 event stream (#22, GET /ws) open until ctx ends and sends every
// decoded message on events. After each connection it sends the queue filter of section
// 7.1. Any read or dial error closes the connection and, after a 1 s pause, reconnects;
// when the session is not valid, the client first re-signs in with its own v1 sign-in
// request (fix of quirk Q6). It returns ctx's error.
func (c *Client) ListenV1(ctx context.Context, events chan<- WebsocketEvent) error {
	if err := c.needV1("listen /ws"); err != nil {
		return err
	}
	filters := []WebsocketFilter{{Type: WebsocketFilterQueue, HatcheryType: ModelTypeVSphere}}
	return c.listen(ctx, "/ws", filters, func(data []byte) error {
		var ev WebsocketEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			c.warn(ctx, "websocket /ws: skipping undecodable message: %v", err)
			return nil
		}
		select {
		case events <- ev:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// ListenV2 keeps the v2 job stream (#28, GET /v2/hatchery/ws) open until ctx ends and sends
// every decoded event on events. Nothing is sent to the server. Reconnection and
// re-sign-in are as for ListenV1, through the v2 sign-in. It returns ctx's error.
func (c *Client) ListenV2(ctx context.Context, events chan<- WebsocketJobQueueEvent) error {
	if err := c.needV2("listen /v2/hatchery/ws"); err != nil {
		return err
	}
	return c.listen(ctx, "/v2/hatchery/ws", nil, func(data []byte) error {
		var ev WebsocketJobQueueEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			c.warn(ctx, "websocket /v2/hatchery/ws: skipping undecodable message: %v", err)
			return nil
		}
		select {
		case events <- ev:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

func (c *Client) listen(ctx context.Context, path string, hello any, handle func([]byte) error) error {
	for {
		err := c.listenOnce(ctx, path, hello, handle)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.warn(ctx, "websocket %s: %v; reconnecting", path, err)
		if err := c.pause(ctx, wsReconnectPause); err != nil {
			return err
		}
	}
}

// listenOnce runs one connection until it fails or ctx ends.
func (c *Client) listenOnce(ctx context.Context, path string, hello any, handle func([]byte) error) error {
	if err := c.ensureSession(ctx); err != nil {
		return fmt.Errorf("sign in before dialling: %w", err)
	}
	hdr := http.Header{}
	date := c.now().Format(DateLayout)
	hdr.Set("Date", date)
	hdr.Set(HeaderRemoteTime, date)
	tok := c.sessionToken()
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	dialCtx, cancel := context.WithTimeout(ctx, wsHandshakeTimeout)
	conn, resp, err := websocket.Dial(dialCtx, wsURL(c.baseURL)+path, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: c.httpClient.Transport},
		HTTPHeader: hdr,
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			c.clearSessionIf(tok)
		}
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(wsReadLimit)
	if hello != nil {
		b, err := json.Marshal(hello)
		if err != nil {
			return fmt.Errorf("encode filter: %w", err)
		}
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			return fmt.Errorf("send filter: %w", err)
		}
	}
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if typ != websocket.MessageText {
			continue
		}
		if err := handle(data); err != nil {
			return err
		}
	}
}

// wsURL turns the API URL's http(s) scheme into ws(s).
func wsURL(base string) string {
	switch {
	case strings.HasPrefix(base, "https://"):
		return "wss://" + strings.TrimPrefix(base, "https://")
	case strings.HasPrefix(base, "http://"):
		return "ws://" + strings.TrimPrefix(base, "http://")
	}
	return base
}

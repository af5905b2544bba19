package cds

import (
	"errors"
	"fmt"
)

// API error ids the hatchery recognises (section 2.5). Errors are told apart by id, never
// by text.
const (
	ErrIDUnknown                     = 1
	ErrIDUnauthorized                = 10
	ErrIDForbidden                   = 11
	ErrIDNotFound                    = 38
	ErrIDWrongRequest                = 74
	ErrIDJobAlreadyBooked            = 89
	ErrIDWorkflowNodeJobRunNotFound  = 112
	ErrIDWorkerModelAlreadyBooked    = 115
	ErrIDWorkerModelDeploymentFailed = 146
	ErrIDInvalidData                 = 149
)

// APIError is the error object of the CDS API. The client returns it (as *APIError) for
// every response with a status >= 300; when the body carries no non-zero id, ID is 0 and
// Message is "HTTP <code>".
type APIError struct {
	ID         int    `json:"id"`
	Message    string `json:"message"`
	Data       any    `json:"data,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	StackTrace string `json:"stack_trace,omitempty"`
	From       string `json:"from,omitempty"`
	// StatusCode is the HTTP status of the response; not part of the JSON object.
	StatusCode int `json:"-"`
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = fmt.Sprintf("HTTP %d", e.StatusCode)
	}
	if e.ID == 0 {
		return msg
	}
	if e.From != "" {
		return fmt.Sprintf("%s (from: %s) (id %d, HTTP %d)", msg, e.From, e.ID, e.StatusCode)
	}
	return fmt.Sprintf("%s (id %d, HTTP %d)", msg, e.ID, e.StatusCode)
}

// ErrorIs tells whether err carries an API error with the given id.
func ErrorIs(err error, id int) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.ID == id
}

// ErrSigningKey marks a sign-in whose response had a missing or unparsable
// X-Api-Pub-Signing-Key header: fatal, not worth retrying.
var ErrSigningKey = errors.New("invalid API public signing key")

// ErrWrongClient is returned when an endpoint of one API generation is called on a client
// of the other (a v2 endpoint on a v1 client or the reverse).
var ErrWrongClient = errors.New("endpoint not available on this client")

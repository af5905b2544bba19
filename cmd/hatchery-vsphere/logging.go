package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// newLogger builds the process logger from the [log] section: level debug, info, warning
// or error (anything else: info, as the original); format json (one JSON object a line),
// discard, or text. Graylog output is accepted in the file but not implemented.
func newLogger(c config.Log, w io.Writer) *log.Logger {
	out := &logOutput{w: w, now: time.Now, level: parseLevel(c.Level)}
	switch strings.ToLower(c.Format) {
	case "json":
		out.json = true
	case "discard":
		out.w = io.Discard
	default:
		if len(c.TextFields) > 0 {
			out.textFields = make(map[string]bool, len(c.TextFields))
			for _, f := range c.TextFields {
				out.textFields[f] = true
			}
		}
	}
	logger := log.NewWithFactory(func() log.Wrapper { return &logEntry{out: out} })
	if !out.json {
		for _, skip := range c.SkipTextFields {
			if field, value, ok := strings.Cut(skip, "="); ok {
				logger.Skip(log.Field(field), value)
			}
		}
	}
	return logger
}

func parseLevel(s string) log.Level {
	switch strings.ToLower(s) {
	case "debug":
		return log.LevelDebug
	case "warning", "warn":
		return log.LevelWarn
	case "error":
		return log.LevelError
	default:
		return log.LevelInfo
	}
}

// logOutput writes whole lines; the mutex keeps lines of concurrent goroutines apart.
type logOutput struct {
	mu         sync.Mutex
	w          io.Writer
	now        func() time.Time
	level      log.Level
	json       bool
	textFields map[string]bool
}

type logField struct {
	key   string
	value any
}

// logEntry is one log line being built by rockbears/log: a fresh one per call.
type logEntry struct {
	out    *logOutput
	fields []logField
}

func (e *logEntry) GetLevel() log.Level { return e.out.level }

func (e *logEntry) WithField(key string, value any) {
	e.fields = append(e.fields, logField{key, value})
}

func (e *logEntry) Debugf(format string, args ...any) { e.write("debug", format, args) }
func (e *logEntry) Infof(format string, args ...any)  { e.write("info", format, args) }
func (e *logEntry) Warnf(format string, args ...any)  { e.write("warning", format, args) }
func (e *logEntry) Errorf(format string, args ...any) { e.write("error", format, args) }

// Fatalf logs only: the daemon returns its errors and exits from main.
func (e *logEntry) Fatalf(format string, args ...any) { e.write("fatal", format, args) }

func (e *logEntry) Panicf(format string, args ...any) {
	e.write("panic", format, args)
	panic(fmt.Sprintf(format, args...))
}

func (e *logEntry) write(level, format string, args []any) {
	msg := fmt.Sprintf(format, args...)
	o := e.out
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now().UTC().Format(time.RFC3339Nano)
	var line []byte
	if o.json {
		m := make(map[string]any, len(e.fields)+3)
		for _, f := range e.fields {
			m[f.key] = f.value
		}
		m["time"], m["level"], m["msg"] = now, level, msg
		b, err := json.Marshal(m)
		if err != nil {
			b, _ = json.Marshal(map[string]string{"time": now, "level": level, "msg": msg, "log_error": err.Error()})
		}
		line = append(b, '\n')
	} else {
		var b strings.Builder
		fmt.Fprintf(&b, "%s [%s] %s", now, strings.ToUpper(level), msg)
		fields := append([]logField(nil), e.fields...)
		sort.Slice(fields, func(i, j int) bool { return fields[i].key < fields[j].key })
		for _, f := range fields {
			if o.textFields == nil || o.textFields[f.key] {
				fmt.Fprintf(&b, " %s=%v", f.key, f.value)
			}
		}
		b.WriteByte('\n')
		line = []byte(b.String())
	}
	// A failed log write has nowhere to be reported.
	_, _ = o.w.Write(line)
}

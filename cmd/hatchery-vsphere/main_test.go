package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, environ []string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr, environ)
	return result{code, stdout.String(), stderr.String()}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hatchery.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// filledExample is `config new` output with the values an operator must fill in.
func filledExample(t *testing.T) string {
	t.Helper()
	r := runCLI(t, nil, "config", "new")
	if r.code != 0 {
		t.Fatalf("config new: %d %s", r.code, r.stderr)
	}
	text := r.stdout
	for _, kv := range [][2]string{
		{`user = ""`, `user = "svc-cds@vsphere.local"`},
		{`endpoint = ""`, `endpoint = "vcenter.example.net"`},
		{`password = ""`, `password = "vcenter-secret-pw"`},
		{`datacenterString = ""`, `datacenterString = "DC1"`},
		{`tokenV2 = ""`, `tokenV2 = "v2-secret-token"`},
	} {
		if !strings.Contains(text, kv[0]) {
			t.Fatalf("config new lacks %s", kv[0])
		}
		text = strings.Replace(text, kv[0], kv[1], 1)
	}
	// api.http.url is the only url = "" in the [api.http] table.
	i := strings.Index(text, "[hatchery.vsphere.commonConfiguration.api.http]")
	j := i + strings.Index(text[i:], `url = ""`)
	return text[:j] + `url = "https://cds.example.net"` + text[j+len(`url = ""`):]
}

func TestConfigNewThenCheck(t *testing.T) {
	path := writeFile(t, filledExample(t))
	r := runCLI(t, nil, "config", "check", "--config", path)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "configuration OK" {
		t.Fatalf("config check = %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

func TestConfigNewUnfilledFailsCheckListingEveryProblem(t *testing.T) {
	r := runCLI(t, nil, "config", "new", "--name", "vsphere-x")
	if !strings.Contains(r.stdout, `name = "vsphere-x"`) {
		t.Fatalf("--name not used")
	}
	path := writeFile(t, r.stdout)
	r = runCLI(t, nil, "config", "check", "--config", path)
	if r.code != 1 {
		t.Fatalf("code = %d, want 1", r.code)
	}
	for _, key := range []string{"hatchery.vsphere.user", "hatchery.vsphere.endpoint", "hatchery.vsphere.password",
		"hatchery.vsphere.datacenterString", "hatchery.vsphere.commonConfiguration.api.http.url", "hatchery.vsphere.commonConfiguration.api.token"} {
		if !strings.Contains(r.stderr, "  - "+key+": ") {
			t.Errorf("stderr lacks %s:\n%s", key, r.stderr)
		}
	}
	// The environment can fill what the file lacks.
	env := []string{"CDS_HATCHERY_VSPHERE_USER=u", "CDS_HATCHERY_VSPHERE_ENDPOINT=vc", "CDS_HATCHERY_VSPHERE_PASSWORD=p",
		"CDS_HATCHERY_VSPHERE_DATACENTERSTRING=DC", "CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_HTTP_URL=http://cds:8081",
		"CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_TOKEN=t"}
	if r := runCLI(t, env, "config", "check", "--config", path); r.code != 0 {
		t.Errorf("with env: %d %s", r.code, r.stderr)
	}
}

func TestConfigCheckExampleFile(t *testing.T) {
	r := runCLI(t, nil, "config", "check", "--config", "../../config.example.toml")
	if r.code != 0 || r.stderr != "" {
		t.Errorf("config check config.example.toml = %d\n%s", r.code, r.stderr)
	}
}

func TestConfigCheckWarnsAboutUnknownKeys(t *testing.T) {
	path := writeFile(t, strings.Replace(filledExample(t), "workerTTL = 120", "workerTTL = 120\n    workerTLL = 5", 1))
	r := runCLI(t, nil, "config", "check", "--config", path)
	if r.code != 0 || !strings.Contains(r.stderr, "unknown key hatchery.vsphere.workertll is ignored") {
		t.Errorf("code %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"start"},
		{"start", "--bogus"},
		{"start", "--config", "x", "extra"},
		{"config"},
		{"config", "frob"},
		{"config", "check"},
		{"config", "new", "--config", "x"},
		{"version", "x"},
	} {
		r := runCLI(t, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "Usage: hatchery-vsphere") {
			t.Errorf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"start", "-h"}} {
		r := runCLI(t, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: hatchery-vsphere") {
			t.Errorf("%v: code %d, stdout %q", args, r.code, r.stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hatchery-vsphere 0.57.0") || !strings.Contains(r.stdout, "/") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}

// fakeDaemon replaces startDaemon for one test and returns what it was given.
func fakeDaemon(t *testing.T, err error) *config.File {
	t.Helper()
	got := &config.File{}
	prevDaemon := startDaemon
	startDaemon = func(ctx context.Context, cfg *config.File, logger *log.Logger) error {
		*got = *cfg
		logger.Info(ctx, "daemon ran")
		return err
	}
	t.Cleanup(func() { startDaemon = prevDaemon })
	fakeSignals(t)
	return got
}

func TestStartLogsTheRedactedConfigAsJSON(t *testing.T) {
	got := fakeDaemon(t, nil)
	text := strings.Replace(filledExample(t), `format = "text"`, `format = "json"`, 1)
	path := writeFile(t, text)
	r := runCLI(t, []string{"CDS_LOG_LEVEL=debug"}, "start", "hatchery:vsphere", "--config", path)
	if r.code != 0 {
		t.Fatalf("start = %d: %s", r.code, r.stderr)
	}
	if got.Hatchery.VSphere.Password != "vcenter-secret-pw" {
		t.Errorf("the daemon did not get the configuration")
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var sawConfig, sawDaemon bool
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		msg, _ := m["msg"].(string)
		sawConfig = sawConfig || (m["level"] == "debug" && strings.HasPrefix(msg, "configuration: {"))
		sawDaemon = sawDaemon || msg == "daemon ran"
	}
	if !sawConfig || !sawDaemon {
		t.Errorf("missing debug configuration line or daemon line:\n%s", r.stdout)
	}
	for _, secret := range []string{"vcenter-secret-pw", "v2-secret-token", "PRIVATE KEY"} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("logs contain the secret %q", secret)
		}
	}
	if !strings.Contains(r.stdout, config.RedactedValue) {
		t.Errorf("no redacted value in the configuration line")
	}
}

func TestStartInfoLevelHidesTheConfigLine(t *testing.T) {
	fakeDaemon(t, nil)
	r := runCLI(t, nil, "start", "--config", writeFile(t, filledExample(t)))
	if r.code != 0 || strings.Contains(r.stdout, "configuration:") || !strings.Contains(r.stdout, "[INFO] daemon ran") {
		t.Errorf("start = %d\n%s", r.code, r.stdout)
	}
}

func TestStartFailures(t *testing.T) {
	fakeDaemon(t, context.DeadlineExceeded)
	if r := runCLI(t, nil, "start", "--config", writeFile(t, filledExample(t))); r.code != 1 || !strings.Contains(r.stdout, "hatchery stopped") {
		t.Errorf("daemon error: code %d\n%s", r.code, r.stdout)
	}
	r := runCLI(t, nil, "start", "--config", writeFile(t, "[hatchery.vsphere]\nworkerTTL = -1\n"))
	if r.code != 1 || !strings.Contains(r.stderr, "hatchery.vsphere.workerTTL: must not be negative") {
		t.Errorf("invalid config: code %d\n%s", r.code, r.stderr)
	}
	r = runCLI(t, nil, "start", "--config", filepath.Join(t.TempDir(), "missing.toml"))
	if r.code != 1 {
		t.Errorf("missing file: code %d", r.code)
	}
}

func TestDaemonRefusesAConfigurationItCannotRun(t *testing.T) {
	// The daemon itself re-checks what it needs before touching the network: a file that
	// skipped validation must not start a half-configured hatchery.
	err := startDaemon(context.Background(), &config.File{}, log.New())
	if err == nil || !strings.Contains(err.Error(), "rsaPrivateKey") {
		t.Errorf("startDaemon(empty config) = %v, want an error naming rsaPrivateKey", err)
	}
}

func TestLoggerFormats(t *testing.T) {
	var buf bytes.Buffer
	l := newLogger(config.Log{Level: "warning", Format: "text"}, &buf)
	ctx := context.Background()
	l.Info(ctx, "hidden")
	l.Warn(ctx, "shown %d", 1)
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "[WARNING] shown 1") {
		t.Errorf("text/warning: %q", buf.String())
	}
	buf.Reset()
	l = newLogger(config.Log{Level: "notice", Format: "discard"}, &buf)
	l.Error(ctx, "x")
	if buf.Len() != 0 {
		t.Errorf("discard wrote %q", buf.String())
	}
	field := log.Field("worker")
	l = newLogger(config.Log{Level: "info", Format: "text", TextFields: []string{"worker"}, SkipTextFields: []string{"worker=noisy"}}, &buf)
	l.RegisterField(field)
	l.Info(context.WithValue(ctx, field, "w1"), "kept")
	l.Info(context.WithValue(ctx, field, "noisy"), "skipped")
	if !strings.Contains(buf.String(), "kept worker=w1\n") || strings.Contains(buf.String(), "skipped") || strings.Contains(buf.String(), "source_line") {
		t.Errorf("text fields: %q", buf.String())
	}
}

// fakeSignals replaces the process signals and exit for one test: send on the returned
// channel (once run has started) to deliver a signal; exits receives the codes exitNow got.
func fakeSignals(t *testing.T) (signals <-chan chan<- os.Signal, exits <-chan int) {
	t.Helper()
	sigCh := make(chan chan<- os.Signal, 1)
	exitCh := make(chan int, 1)
	prevNotify, prevExit := notifySignals, exitNow
	notifySignals = func(ch chan<- os.Signal) func() {
		sigCh <- ch
		return func() {}
	}
	exitNow = func(code int) { exitCh <- code }
	t.Cleanup(func() { notifySignals, exitNow = prevNotify, prevExit })
	return sigCh, exitCh
}

// drainingDaemon replaces startDaemon with one that, once stopped, drains until drained
// is closed. stopping receives when its context ends.
func drainingDaemon(t *testing.T) (stopping <-chan struct{}, drained chan<- struct{}) {
	t.Helper()
	stopCh, drainCh := make(chan struct{}), make(chan struct{})
	prev := startDaemon
	startDaemon = func(ctx context.Context, _ *config.File, _ *log.Logger) error {
		<-ctx.Done()
		close(stopCh)
		<-drainCh
		return nil
	}
	t.Cleanup(func() { startDaemon = prev })
	return stopCh, drainCh
}

func TestFirstSignalDrainsAndExitsZero(t *testing.T) {
	signals, exits := fakeSignals(t)
	stopping, drained := drainingDaemon(t)
	path := writeFile(t, filledExample(t))
	done := make(chan result, 1)
	go func() { done <- runCLI(t, nil, "start", "--config", path) }()

	(<-signals) <- syscall.SIGTERM
	<-stopping // the daemon's context ended: it drains
	close(drained)
	r := <-done
	if r.code != 0 || !strings.Contains(r.stdout, "received terminated: stopping") {
		t.Errorf("start = %d\n%s", r.code, r.stdout)
	}
	select {
	case code := <-exits:
		t.Errorf("exited at once with %d after a single signal", code)
	default:
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	signals, exits := fakeSignals(t)
	stopping, drained := drainingDaemon(t)
	path := writeFile(t, filledExample(t))
	done := make(chan result, 1)
	go func() { done <- runCLI(t, nil, "start", "--config", path) }()

	sigs := <-signals
	sigs <- os.Interrupt
	<-stopping
	sigs <- os.Interrupt // the drain is still under way
	if code := <-exits; code != exitCodeSecondSignal {
		t.Errorf("exit code %d, want %d", code, exitCodeSecondSignal)
	}
	// A real process is gone by now; let the fake daemon end so the test can.
	close(drained)
	r := <-done
	if !strings.Contains(r.stdout, "received interrupt again: exiting at once") {
		t.Errorf("no log line for the forced exit:\n%s", r.stdout)
	}
}

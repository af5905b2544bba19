package hatchery

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserTimeout bounds the whole browser session: a hung Chromium fails the test instead of
// the suite.
const browserTimeout = 60 * time.Second

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium binary found (chromium, chromium-browser or google-chrome in PATH): the status page browser test needs one")
	return ""
}

// mutableSource serves a dashboard the test can change while the page is open.
type mutableSource struct {
	mu sync.Mutex
	d  Dashboard
}

func (s *mutableSource) get(context.Context) (Dashboard, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d, nil
}

func (s *mutableSource) addVM(row VMRow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d.VMs = append(slices.Clone(s.d.VMs), row)
}

// TestUIInABrowser loads the status page in headless Chromium, checks that the page's
// script picks up new data from /mon/vms, and that every VM and every bar is visible.
// The README's screenshot comes from the live hatchery's test in internal/daemon.
func TestUIInABrowser(t *testing.T) {
	chromium := findChromium(t)
	src := &mutableSource{d: sampleDashboard()}
	srv := httptest.NewServer(NewHTTPHandler(HTTPOptions{Extra: NewUIHandlers(src.get)}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	// The server-rendered page first.
	if err := chromedp.Do(browserCtx,
		chromedp.Navigate(srv.URL+"/mon/ui?refresh=1"),
		chromedp.WaitVisible(chromedp.CSS(`#vms tbody tr[data-vm="zeta-worker"]`)),
	); err != nil {
		t.Fatalf("load the status page: %v", err)
	}

	// Then the script's refresh: a VM that appears in vCenter appears on the open page.
	src.addVM(VMRow{Name: "late-worker", State: VMStateRunning, Model: "debian12", JobID: "99999", Created: uiTestNow.Add(-5 * time.Second)})
	if err := chromedp.Do(browserCtx, chromedp.WaitVisible(chromedp.CSS(`#vms tbody tr[data-vm="late-worker"]`))); err != nil {
		t.Fatalf("wait for the refreshed page: %v", err)
	}
	names, err := chromedp.Run(browserCtx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#vms tbody tr td.name")).map(td => td.textContent)`))
	if err != nil {
		t.Fatalf("read the VM table: %v", err)
	}
	widths, err := chromedp.Run(browserCtx, chromedp.Evaluate[[]float64](`Array.from(document.querySelectorAll("#capacity .bar")).map(b => b.getBoundingClientRect().width)`))
	if err != nil {
		t.Fatalf("measure the bars: %v", err)
	}
	live, err := chromedp.Run(browserCtx, chromedp.Text(chromedp.CSS(`#live`)))
	if err != nil {
		t.Fatalf("read the refresh indicator: %v", err)
	}
	unlimited, err := chromedp.Run(browserCtx, chromedp.Text(chromedp.CSS(`#capacity .unlimited`)))
	if err != nil {
		t.Fatalf("read the unlimited gauge: %v", err)
	}

	want := append(slices.Clone(sortedSampleNames[:4]), "alpha-worker", "late-worker", "zeta-worker", "done-worker", "broken-worker")
	if !slices.Equal(names, want) {
		t.Errorf("VM table rows = %v, want %v", names, want)
	}
	if live != "live, every 1 s" {
		t.Errorf("refresh indicator = %q", live)
	}
	if unlimited != "unlimited" {
		t.Errorf("unlimited gauge text = %q", unlimited)
	}
	if len(widths) != 3 {
		t.Errorf("bars = %v, want 3 (one per limited gauge)", widths)
	}
	for i, w := range widths {
		if w <= 0 {
			t.Errorf("bar %d has rendered width %v, want > 0", i, w)
		}
	}

	png, err := chromedp.Run(browserCtx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(t.TempDir(), "status-page.png")
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		out = filepath.Join("..", "..", "docs", "status-page.png")
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatalf("save the screenshot: %v", err)
	}
	t.Logf("screenshot: %s", out)
}

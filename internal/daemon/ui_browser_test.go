package daemon

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
)

// browserTimeout bounds the whole browser session: a hung Chromium fails the test instead
// of the suite.
const browserTimeout = 90 * time.Second

// findChromium is a copy of the helper of internal/hatchery's browser test (test helpers
// are not shared across packages).
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium binary found (chromium, chromium-browser or google-chrome in PATH): the live status page browser test needs one")
	return ""
}

// newBrowser starts a headless Chromium bound to ctx and returns its tab.
func newBrowser(t *testing.T, ctx context.Context, chromium string) context.Context {
	t.Helper()
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
	t.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	return browserCtx
}

// rowSelector selects the row of a VM in the page's VM table.
func rowSelector(vmName string) string {
	return `#vms tbody tr[data-vm="` + vmName + `"]`
}

// TestStatusPageOfALiveHatcheryInABrowser runs the daemon on the simulators with jobs held
// running, opens its status page in headless Chromium, checks that every worker VM is listed
// as running and that the capacity bars are drawn, then lets the jobs finish and checks that
// the rows leave the open page through its own refresh. UPDATE_SCREENSHOT=1 writes
// docs/status-page.png.
func TestStatusPageOfALiveHatcheryInABrowser(t *testing.T) {
	chromium := findChromium(t)
	h := newTestHarness(t, HarnessOptions{HoldJobs: true})
	cfg := providerConfig(h)
	vs := &cfg.Hatchery.VSphere
	// Limits make the vCPU and memory gauges bars instead of "unlimited".
	vs.MaxCPUs, vs.MaxMemoryMB = 32, 65536
	vs.IPRange = "10.30.0.10/28"
	vs.Gateway, vs.DNS, vs.SubnetMask = "10.30.0.1", "10.30.0.2", "255.255.255.0"
	d := startDaemon(t, cfg, providerOptions(h)...)

	const jobs = 4
	var jobIDs []string
	for i := range jobs {
		jobIDs = append(jobIDs, h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "ui", RunNumber: int64(i + 1)}, debian12Model))
	}
	// The workers hold their jobs (HoldJobs) until the test completes them.
	var workers []string
	d.wait(t, h.API, "every job to run in its worker VM", func() bool {
		workers = workers[:0]
		for _, r := range h.API.WorkerRuns() {
			if slices.Contains(jobIDs, r.RunJobID) && r.Err == nil && !r.Finished {
				workers = append(workers, r.Name)
			}
		}
		return len(workers) == jobs
	})
	slices.Sort(workers)
	for _, w := range workers {
		if !vmExists(h, w) {
			t.Fatalf("worker %q runs without a VM of its name; VMs: %v", w, h.VCenter.VMNames())
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), browserTimeout)
	defer cancel()
	browser := newBrowser(t, ctx, chromium)
	base := "http://" + d.addr
	if err := chromedp.Do(browser,
		chromedp.Navigate(base+"/?refresh=1"),
		chromedp.WaitVisible(chromedp.CSS(`#vms tbody`)),
	); err != nil {
		t.Fatalf("load the status page: %v", err)
	}

	// The page may have been built before the last VM showed; its refresh brings it.
	allRunning := `(() => { const names = ` + mustJSON(t, workers) + `;
		return names.every(n => { const b = document.querySelector('#vms tbody tr[data-vm="' + n + '"] .badge');
			return b !== null && b.textContent === "running"; }); })()`
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](allRunning, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(45*time.Second))); err != nil {
		rows, _ := chromedp.Run(browser, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#vms tbody tr")).map(tr => tr.innerText)`))
		t.Fatalf("waiting for the worker VMs %v to show as running: %v; rows: %q", workers, err, rows)
	}

	gauges, err := chromedp.Run(browser, chromedp.Evaluate[[]struct {
		Name  string  `json:"name"`
		Value string  `json:"value"`
		Width float64 `json:"width"`
		Bar   bool    `json:"bar"`
	}](`Array.from(document.querySelectorAll("#capacity .gauge")).map(g => {
		const bar = g.querySelector(".bar");
		return {name: g.querySelector(".gauge-name").textContent, value: g.querySelector(".gauge-value").textContent,
			bar: bar !== null, width: bar ? bar.getBoundingClientRect().width : 0};
	})`))
	if err != nil {
		t.Fatalf("read the capacity gauges: %v", err)
	}
	byName := map[string]string{}
	for _, g := range gauges {
		byName[g.Name] = g.Value
		if !g.Bar {
			t.Errorf("gauge %q (%s) has no bar", g.Name, g.Value)
			continue
		}
		if g.Width <= 0 {
			t.Errorf("bar of gauge %q (%s) has rendered width %v, want > 0", g.Name, g.Value, g.Width)
		}
	}
	// debian12 has 2 vCPUs and 4096 MB; the page may lag a refresh behind, never ahead.
	for name, want := range map[string]string{
		"Workers": "4 / 10 workers", "vCPUs": "8 / 32 vCPUs", "Memory": "16384 / 65536 MB", "IP addresses": "4 / ",
	} {
		if got, ok := byName[name]; !ok || !strings.HasPrefix(got, want) {
			t.Errorf("gauge %q = %q, want %q…; gauges: %v", name, got, want, byName)
		}
	}

	png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(t.TempDir(), "status-page.png")
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		out = filepath.Join("..", "..", "docs", "status-page.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatalf("save the screenshot: %v", err)
	}
	t.Logf("screenshot: %s", out)

	// The jobs end: the workers power their VMs off, cleanup deletes them, and the open page
	// drops their rows on its own.
	for _, w := range workers {
		if !h.API.CompleteWorker(w) {
			t.Fatalf("worker %q was not held", w)
		}
	}
	for _, w := range workers {
		if err := chromedp.Do(browser, chromedp.WaitNotPresent(chromedp.CSS(rowSelector(w)))); err != nil {
			t.Fatalf("waiting for the row of VM %q to leave the page: %v", w, err)
		}
	}
	count, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(`#vm-count`)))
	if err != nil {
		t.Fatalf("read the VM count: %v", err)
	}
	if count != "(0)" {
		t.Errorf("VM count after the jobs = %s, want (0)", count)
	}
	for _, id := range jobIDs {
		if st := h.API.V2JobStatus(id); st != cdssim.StatusSuccess {
			t.Errorf("job %s ended %s", id, st)
		}
	}
	checkNoProblems(t, h)
	if err := d.stop(); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

package hatchery

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// runInBackground runs e.h.Run and returns its cancel and result channel.
func runInBackground(e *schedEnv) (context.CancelFunc, <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	return cancel, done
}

func TestShutdownLetsTheSpawnUnderWayFinish(t *testing.T) {
	ticks := newSchedTicks("shutdown")
	e := newSchedEnv(t, nil, withoutV1(), withTicks(ticks))
	e.v2.events = make(chan cds.WebsocketJobQueueEvent)
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	gate := make(chan struct{})
	in := make(chan SpawnArguments, 1)
	e.prov.spawnGate, e.prov.spawnIn = gate, in

	cancel, done := runInBackground(e)
	e.v2.events <- cds.WebsocketJobQueueEvent{JobRunID: schedUUID, Region: "eu-v2"}
	<-in // the VM is being created

	cancel() // SIGTERM
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a spawn was under way", err)
	default:
	}
	close(gate) // the spawn completes within the grace period
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after a clean drain, want nil", err)
	}
	if got := e.rec.with("v2.V2QueueJobRelease"); len(got) != 0 {
		t.Errorf("a started job was released: %q", got)
	}
	if st := e.h.routines.States(); slices.ContainsFunc(st, func(s GoroutineState) bool { return s.Running }) {
		t.Errorf("goroutines still running after Run: %+v", st)
	}
}

func TestShutdownCancelsSpawnsAfterTheGraceAndReleasesTheirJobs(t *testing.T) {
	ticks := newSchedTicks("shutdown")
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.Provision.ShutdownTimeout = 5 }, withTicks(ticks))
	e.v1.events = make(chan cds.WebsocketEvent)
	e.v2.events = make(chan cds.WebsocketJobQueueEvent)
	e.v1.models = []cds.Model{v1Model(3, "grp", "debian")}
	e.v1.jobs[42] = v1Job(42)
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	in := make(chan SpawnArguments, 2)
	e.prov.spawnGate, e.prov.spawnIn = make(chan struct{}), in // spawns never finish by themselves

	cancel, done := runInBackground(e)
	e.v2.events <- cds.WebsocketJobQueueEvent{JobRunID: schedUUID, Region: "eu-v2"}
	<-in
	e.v1.events <- v1WaitingEvent(t, 42)
	<-in

	cancel()
	ticks.fire("shutdown") // shutdownTimeout elapsed
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	calls := e.rec.all()
	for _, want := range []string{"v1.QueueJobRelease 42", "v2.V2QueueJobRelease eu-v2 " + schedUUID} {
		if n := len(e.rec.with(want)); n != 1 {
			t.Errorf("%q sent %d times, want once; calls:\n%s", want, n, strings.Join(calls, "\n"))
		}
	}
	// The users are told why their job goes back to the queue.
	if len(e.rec.with("v2.V2QueueJobSendInfo eu-v2 "+schedUUID+" error")) != 1 ||
		len(e.rec.with("v1.QueueJobSendSpawnInfo 42 "+cds.MsgSpawnInfoHatcheryErrorSpawn)) != 1 {
		t.Errorf("no spawn error reported; calls:\n%s", strings.Join(calls, "\n"))
	}
	signOut := indexOf(calls, "v1.SignOut")
	if signOut < 0 || signOut < indexOf(calls, "v1.QueueJobRelease") || signOut < indexOf(calls, "v2.V2QueueJobRelease") {
		t.Errorf("sign-out missing or before the releases:\n%s", strings.Join(calls, "\n"))
	}
}

// v1WaitingEvent is the websocket event of a waiting v1 job.
func v1WaitingEvent(t *testing.T, id int64) cds.WebsocketEvent {
	t.Helper()
	ev := cds.WebsocketEvent{}
	ev.Event.TypeEvent = cds.EventTypeRunWorkflowJob
	ev.Event.Status = cds.StatusWaiting
	payload, err := json.Marshal(cds.EventRunWorkflowJob{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	ev.Event.Payload = payload
	return ev
}

func TestStoppingHatcheryBooksNothingMore(t *testing.T) {
	e := newSchedEnv(t, nil)
	stopped := make(chan struct{})
	close(stopped)
	e.h.stopCh = stopped
	e.v1.jobs[42] = v1Job(42)
	e.h.pending.add("42")
	// A request queued for the starters when the drain began is not served.
	e.h.starterCh <- spawnRequest{jobID: "42", v1JobID: 42, model: newV1StarterModel(v1Model(3, "grp", "debian"))}
	if err := e.h.starterLoop(stopped, context.Background()); err != nil {
		t.Fatal(err)
	}
	e.h.spawnForJob(context.Background(), spawnRequest{jobID: schedUUID, model: v2StarterModel(), region: "eu-v2"})
	if got := append(e.rec.with("v1.QueueJobBook"), e.rec.with("v2.V2QueueJobTake")...); len(got) != 0 {
		t.Errorf("booked while stopping: %q", got)
	}
	if n := len(e.prov.spawned()); n != 0 {
		t.Errorf("spawned %d workers while stopping", n)
	}
}

func TestDrainReleasesJobsStillBooked(t *testing.T) {
	e := newSchedEnv(t, nil)
	e.h.booked.add("42", "")
	e.h.booked.add(schedUUID, "eu-west")
	e.h.drain(context.Background(), &errgroup.Group{}, func() {})
	if len(e.rec.with("v1.QueueJobRelease 42")) != 1 || len(e.rec.with("v2.V2QueueJobRelease eu-west "+schedUUID)) != 1 {
		t.Errorf("calls %q", e.rec.all())
	}
	if left := e.h.booked.snapshot(); len(left) != 0 {
		t.Errorf("still booked: %v", left)
	}
}

// gatedProvider is a fakeProvider with a Gate.
type gatedProvider struct {
	*fakeProvider
	ok bool
}

func (p *gatedProvider) Accepting(context.Context) (bool, string) {
	p.rec.add("provider.Accepting")
	return p.ok, "vCenter unreachable"
}

func TestClosedGateBooksNothing(t *testing.T) {
	var gp *gatedProvider
	e := newSchedEnv(t, nil, func(o *Options, env *schedEnv) {
		gp = &gatedProvider{fakeProvider: env.prov}
		o.Provider = gp
	})
	e.v1.jobs[42] = v1Job(42)
	e.v1.models = []cds.Model{v1Model(3, "grp", "debian")}
	e.h.models.set(e.v1.models)
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	e.h.pending.add("42")
	e.h.pending.add(schedUUID)
	ctx := context.Background()
	e.h.handleV1Job(ctx, 42)
	e.h.handleV2Job(ctx, schedUUID)
	if _, pushed := e.takeRequest(t); pushed {
		t.Error("a job was pushed to the starters while the gate is closed")
	}
	if e.h.pending.has("42") || e.h.pending.has(schedUUID) {
		t.Error("skipped jobs stay pending: they would not be seen again by polling")
	}
	// The gate is checked again just before booking.
	e.h.spawnForJob(ctx, spawnRequest{jobID: "42", v1JobID: 42, model: newV1StarterModel(v1Model(3, "grp", "debian"))})
	if got := e.rec.with("v1.QueueJobBook"); len(got) != 0 {
		t.Errorf("booked through a closed gate: %q", got)
	}

	gp.ok = true
	e.h.pending.add("42")
	e.h.handleV1Job(ctx, 42)
	req, pushed := e.takeRequest(t)
	if !pushed {
		t.Fatal("open gate: job not pushed")
	}
	e.h.spawnForJob(ctx, req)
	if got := e.rec.with("v1.QueueJobBook"); len(got) != 1 {
		t.Errorf("open gate: books %q, want 1", got)
	}
}

func TestReleaseJob(t *testing.T) {
	e := newSchedEnv(t, nil)
	ctx := context.Background()
	booked := v1Job(42)
	booked.BookedBy = cds.ServiceRef{Name: e.h.cfg.Name}
	e.v1.jobs[42] = booked
	scheduling := v2Info(schedUUID)
	scheduling.RunJob.Status = cds.V2StatusScheduling
	e.v2.jobs[schedUUID] = scheduling

	if err := e.h.ReleaseJob(ctx, "42", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.h.ReleaseJob(ctx, schedUUID, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.h.ReleaseJob(ctx, schedUUID, "eu-west"); err != nil {
		t.Fatal(err)
	}
	want := []string{"v1.QueueJobRelease 42", "v2.V2QueueJobRelease eu-v2 " + schedUUID, "v2.V2QueueJobRelease eu-west " + schedUUID}
	if got := releases(e.rec.all()); !slices.Equal(got, want) {
		t.Errorf("releases %q, want %q", got, want)
	}
	if err := e.h.ReleaseJob(ctx, "not-a-job", ""); err == nil {
		t.Error("no error for an ID that is neither a v1 ID nor a UUID")
	}
	v2only := newSchedEnv(t, nil, withoutV1())
	if err := v2only.h.ReleaseJob(ctx, "42", ""); err == nil || !strings.Contains(err.Error(), "no v1 client") {
		t.Errorf("v1 release without a v1 client: %v", err)
	}
}

// A worker may take its job, run it and power its VM off between two cleanup passes: the
// provider then cannot tell it from a worker that died. A job that moved on is left alone.
func TestReleaseJobLeavesAJobThatMovedOn(t *testing.T) {
	e := newSchedEnv(t, nil)
	ctx := context.Background()
	building := v1Job(43)
	building.Status = cds.StatusBuilding
	building.BookedBy = cds.ServiceRef{Name: e.h.cfg.Name}
	e.v1.jobs[43] = building
	otherHatchery := v1Job(44)
	otherHatchery.BookedBy = cds.ServiceRef{Name: "someone-else"}
	e.v1.jobs[44] = otherHatchery
	done := v2Info(schedUUID)
	done.RunJob.Status = "Success"
	e.v2.jobs[schedUUID] = done

	for _, id := range []string{"43", "44", schedUUID} {
		if err := e.h.ReleaseJob(ctx, id, ""); !errors.Is(err, ErrJobNotReleasable) {
			t.Errorf("ReleaseJob(%s) = %v, want ErrJobNotReleasable", id, err)
		}
	}
	if got := releases(e.rec.all()); len(got) != 0 {
		t.Errorf("released %q", got)
	}
}

// After a restart the provider asks whether the job of a VM it did not make still waits
// for that VM's worker: only a job booked or taken by this hatchery does.
func TestJobAwaitsWorker(t *testing.T) {
	e := newSchedEnv(t, nil)
	ctx := context.Background()
	booked := v1Job(42)
	booked.BookedBy = cds.ServiceRef{Name: e.h.cfg.Name}
	e.v1.jobs[42] = booked
	building := v1Job(43)
	building.Status = cds.StatusBuilding
	building.BookedBy = cds.ServiceRef{Name: e.h.cfg.Name}
	e.v1.jobs[43] = building
	e.v1.jobs[44] = v1Job(44) // back in the queue, booked by nobody
	scheduling := v2Info(schedUUID)
	scheduling.RunJob.Status = cds.V2StatusScheduling
	e.v2.jobs[schedUUID] = scheduling
	const otherUUID = "5c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
	waiting := v2Info(otherUUID)
	waiting.RunJob.Status = cds.V2StatusWaiting
	e.v2.jobs[otherUUID] = waiting

	for id, want := range map[string]bool{"42": true, "43": false, "44": false, "45": false, schedUUID: true, otherUUID: false, "00000000-0000-4000-8000-00000000dead": false} {
		got, err := e.h.JobAwaitsWorker(ctx, id, "")
		if err != nil || got != want {
			t.Errorf("JobAwaitsWorker(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
	e.v1.jobInfoErr = errors.New("API down")
	if _, err := e.h.JobAwaitsWorker(ctx, "42", ""); err == nil {
		t.Error("an API failure is not reported")
	}
	if got := releases(e.rec.all()); len(got) != 0 {
		t.Errorf("a question released jobs: %q", got)
	}
}

func TestExtraStatusLinesAreStampedAndLast(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV1(), func(o *Options, _ *schedEnv) {
		o.ExtraStatus = func(context.Context) []cds.MonitoringStatusLine {
			return []cds.MonitoringStatusLine{{Status: cds.MonitoringStatusAlert, Component: "vCenter session", Value: "re-login failing"}}
		}
	})
	lines := e.h.Status(context.Background()).Lines
	last := lines[len(lines)-1]
	if last.Component != "vCenter session" || last.Status != cds.MonitoringStatusAlert || last.Service != "vsphere-a" || last.Hostname != "h1" {
		t.Errorf("last line %+v", last)
	}
}

func releases(calls []string) []string {
	var out []string
	for _, c := range calls {
		if strings.Contains(c, "Release") {
			out = append(out, c)
		}
	}
	return out
}

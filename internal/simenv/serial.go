package simenv

import (
	"fmt"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// serializer makes the simulator safe to use from many goroutines. vcsim reads some of its
// objects without their lock while task goroutines write them (Datastore.resolve against
// UnregisterVM, the container view walk against folderPutChild, ...), which -race reports.
// Rather than patching vcsim, every piece of work on its objects runs under one mutex, and
// work that starts tasks keeps the mutex until those tasks have finished: nothing in the
// simulator ever runs alongside anything else. Delays and long-poll waits happen outside.
type serializer struct {
	reg     *simulator.Registry
	tasks   *taskTracker
	closing <-chan struct{}

	mu     sync.Mutex
	free   *sync.Cond // signalled when busy turns false
	busy   bool       // someone has the simulator
	urgent int        // urgent callers waiting: others let them go first

	// polls remembers, per property collector, what its last long-poll attempt saw.
	// Only touched by the holder of the simulator (busy).
	polls map[string]pollState

	afterMu sync.Mutex
	after   []func()

	statsMu sync.Mutex
	stats   Stats
}

// Stats tells how much the simulator worked, for load measurements: since it serves one
// piece of work at a time, Busy over the wall time of a run is how saturated it was.
type Stats struct {
	// Busy is the time the simulator was held (the work and its tasks).
	Busy time.Duration
	// LongPolls is the part of Busy spent in vcsim's WaitForUpdatesEx, which waits at
	// least 20 ms per call with the simulator held and re-evaluates the collector's filters
	// for every change of any object since its last call.
	LongPolls time.Duration
	// Clones is the part of Busy spent cloning (CloneVM_Task and its task: vcsim creates
	// the VM and its files), one clone at a time; CloneCalls counts them.
	Clones     time.Duration
	CloneCalls int
}

// Sub is the work done between two readings.
func (s Stats) Sub(before Stats) Stats {
	return Stats{Busy: s.Busy - before.Busy, LongPolls: s.LongPolls - before.LongPolls,
		Clones: s.Clones - before.Clones, CloneCalls: s.CloneCalls - before.CloneCalls}
}

func (s *serializer) addClone(d time.Duration) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.Clones += d
	s.stats.CloneCalls++
}

func (s *serializer) addStats(busy, longPoll time.Duration) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.Busy += busy
	s.stats.LongPolls += longPoll
}

func (s *serializer) readStats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func newSerializer(reg *simulator.Registry, tasks *taskTracker, closing <-chan struct{}) *serializer {
	s := &serializer{reg: reg, tasks: tasks, closing: closing, polls: make(map[string]pollState)}
	s.free = sync.NewCond(&s.mu)
	return s
}

// do runs f with the simulator to itself, waits for every task f started to finish, and
// then, with the simulator released, runs the callbacks queued with later during f.
// f must not call do (it is not reentrant): no client call, no Env helper.
func (s *serializer) do(f func()) {
	s.run(false, "", f)
}

// doCall is do for a client's SOAP call of method, whose share of the work is counted.
func (s *serializer) doCall(method string, f func()) {
	s.run(false, method, f)
}

// doUrgent is do ahead of every caller not urgent. The guest's own actions use it: a
// guest shutting down does not wait behind the vCenter's clients, whose next moves may
// depend on it having happened (a finished worker's VM is off before its slot is reused).
func (s *serializer) doUrgent(f func()) {
	s.run(true, "", f)
}

func (s *serializer) run(urgent bool, method string, f func()) {
	s.acquire(urgent)
	start := time.Now()
	f()
	s.tasks.settle(s.reg, s.closing)
	busy := time.Since(start)
	s.addStats(busy, 0)
	if method == "CloneVM_Task" {
		s.addClone(busy)
	}
	s.afterMu.Lock()
	after := s.after
	s.after = nil
	s.afterMu.Unlock()
	s.release()
	for _, g := range after {
		g()
	}
}

func (s *serializer) acquire(urgent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if urgent {
		s.urgent++
		defer func() { s.urgent-- }()
	}
	for s.busy || (!urgent && s.urgent > 0) {
		s.free.Wait()
	}
	s.busy = true
}

func (s *serializer) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = false
	s.free.Broadcast()
}

// later queues f to run right after the current do releases the simulator, in the same
// goroutine: code running under the mutex uses it for callbacks that may call the Env.
func (s *serializer) later(f func()) {
	s.afterMu.Lock()
	defer s.afterMu.Unlock()
	s.after = append(s.after, f)
}

// taskTracker knows which simulator tasks are running (a registry RegisterObject): a task
// is put in the registry when it starts and its info.state is updated when it ends.
type taskTracker struct {
	mu       sync.Mutex
	running  map[types.ManagedObjectReference]*trackedTask
	finished []*simulator.Task // ended since the last settle
	idle     chan struct{}     // closed while nothing runs
}

type trackedTask struct {
	task *simulator.Task
	done chan struct{}
}

func newTaskTracker() *taskTracker {
	idle := make(chan struct{})
	close(idle)
	return &taskTracker{running: make(map[types.ManagedObjectReference]*trackedTask), idle: idle}
}

func (t *taskTracker) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "SimenvTaskTracker", Value: "simenv-task-tracker"}
}

func (t *taskTracker) PutObject(_ *simulator.Context, obj mo.Reference) {
	task, ok := obj.(*simulator.Task)
	// Tasks made by TaskManager.CreateTask (no Execute) are ended by their client through
	// SetTaskState, maybe never: waiting for them would hold the simulator forever.
	if !ok || task.Execute == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.running) == 0 {
		t.idle = make(chan struct{})
	}
	t.running[task.Self] = &trackedTask{task: task, done: make(chan struct{})}
}

func (t *taskTracker) UpdateObject(_ *simulator.Context, obj mo.Reference, changes []types.PropertyChange) {
	task, ok := obj.(*mo.Task)
	if !ok {
		return
	}
	for _, c := range changes {
		if c.Name != "info.state" {
			continue
		}
		switch types.TaskInfoState(fmt.Sprint(c.Val)) {
		case types.TaskInfoStateSuccess, types.TaskInfoStateError:
			t.end(task.Self)
		}
	}
}

func (t *taskTracker) RemoveObject(_ *simulator.Context, ref types.ManagedObjectReference) {
	if ref.Type == "Task" {
		t.end(ref)
	}
}

func (t *taskTracker) end(ref types.ManagedObjectReference) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tt, ok := t.running[ref]
	if !ok {
		return
	}
	delete(t.running, ref)
	close(tt.done)
	t.finished = append(t.finished, tt.task)
	if len(t.running) == 0 {
		close(t.idle)
	}
}

// wait returns once the task ref is over, its last update included. It returns at once
// for a task that is not tracked (already over, or not started by Task.Run).
func (t *taskTracker) wait(reg *simulator.Registry, ref types.ManagedObjectReference, closing <-chan struct{}) {
	t.mu.Lock()
	tt, ok := t.running[ref]
	t.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-tt.done:
		barrier(reg, tt.task)
	case <-closing:
	}
}

// settle returns once no task runs and every finished one is completely over.
func (t *taskTracker) settle(reg *simulator.Registry, closing <-chan struct{}) {
	for {
		t.mu.Lock()
		idle := t.idle
		var finished []*simulator.Task
		if len(t.running) == 0 {
			finished = t.finished
			t.finished = nil
		}
		t.mu.Unlock()
		select {
		case <-idle:
		case <-closing:
			return
		}
		if finished == nil {
			t.mu.Lock()
			quiet := len(t.running) == 0 && len(t.finished) == 0
			t.mu.Unlock()
			if quiet {
				return
			}
			continue
		}
		for _, task := range finished {
			barrier(reg, task)
		}
	}
}

// barrier waits until the goroutine of a finished task has left its final update: the
// state change that ended the task reaches the registry handlers (this tracker among
// them) while the task's goroutine holds the task's lock, and the other handlers may
// still be writing.
func barrier(reg *simulator.Registry, task *simulator.Task) {
	reg.WithLock(&simulator.Context{}, task, func() {})
}

// changeFeed counts the changes of simulator objects (a registry RegisterObject), so that
// long polls know when asking the simulator again may yield something.
type changeFeed struct {
	mu      sync.Mutex
	gen     uint64
	changed chan struct{} // closed at the next change
}

func newChangeFeed() *changeFeed {
	return &changeFeed{changed: make(chan struct{})}
}

func (f *changeFeed) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "SimenvChangeFeed", Value: "simenv-change-feed"}
}

func (f *changeFeed) PutObject(*simulator.Context, mo.Reference) { f.bump() }

func (f *changeFeed) UpdateObject(*simulator.Context, mo.Reference, []types.PropertyChange) {
	f.bump()
}

func (f *changeFeed) RemoveObject(*simulator.Context, types.ManagedObjectReference) { f.bump() }

func (f *changeFeed) bump() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	close(f.changed)
	f.changed = make(chan struct{})
}

// state returns the number of changes so far and a channel closed at the next one.
func (f *changeFeed) state() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen, f.changed
}

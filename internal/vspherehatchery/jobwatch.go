package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// jobWatch follows the worker VMs of jobs from one cleanup pass to the next, so that a job
// whose VM died (powered off, or gone from vCenter) before its worker registered is given
// back to the queue at once instead of after the API's booking timeout.
//
// Only VMs this process has seen running are watched, and a worker seen registered once is
// never released: after a restart a VM already powered off has an unknown history and is
// left to the API's timeout. A worker that registers, runs and stops between two passes is
// never seen registered; releasing its finished job is refused by the API, which no longer
// has it booked.
type jobWatch struct {
	mu  sync.Mutex
	vms map[string]*watchedJob // by VM name
	// gen counts the listings; a VM watched since a listing began may be missing from it.
	gen uint64
}

type watchedJob struct {
	jobID, region string
	gen           uint64 // the listing generation when the watch began
	registered    bool   // the worker was seen registered
	released      bool
}

func newJobWatch() *jobWatch { return &jobWatch{vms: make(map[string]*watchedJob)} }

// watch starts following a running VM of a job (no-op if already followed).
func (w *jobWatch) watch(vm, jobID, region string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.vms[vm]; !ok {
		w.vms[vm] = &watchedJob{jobID: jobID, region: region, gen: w.gen}
	}
}

// beginListing is called right before a listing whose result goes to vanished.
func (w *jobWatch) beginListing() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	return w.gen
}

// sawRegistered records that the VM's worker is known by the API.
func (w *jobWatch) sawRegistered(vm string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if j, ok := w.vms[vm]; ok {
		j.registered = true
	}
}

// claimRelease returns the job of a watched VM whose worker was never seen registered, once:
// the caller releases it.
func (w *jobWatch) claimRelease(vm string) (jobID, region string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	j, found := w.vms[vm]
	if !found || j.registered || j.released {
		return "", "", false
	}
	j.released = true
	return j.jobID, j.region, true
}

// forget stops following a VM (deleted).
func (w *jobWatch) forget(vm string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.vms, vm)
}

// vanished stops following the VMs missing from the listing of generation listing (only
// those watched before it began: a VM spawned during the listing may not be in it) and
// returns those whose job must be released.
func (w *jobWatch) vanished(present func(string) bool, listing uint64) map[string]watchedJob {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]watchedJob{}
	for name, j := range w.vms {
		if present(name) || j.gen >= listing {
			continue
		}
		delete(w.vms, name)
		if !j.registered && !j.released {
			out[name] = *j
		}
	}
	return out
}

// len is the number of watched VMs.
func (w *jobWatch) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.vms)
}

// watchSpawned follows the VM of a job just started.
func (o *Orchestrator) watchSpawned(args hatchery.SpawnArguments) {
	if IsRegistration(args.JobID) {
		return
	}
	o.jobs.watch(args.WorkerName, args.JobID, args.Region)
}

// observeJobVM updates the watch of an own worker VM seen by a cleanup pass and reports
// whether its job must be released now: its VM is powered off (or about to be deleted as
// AWOL) and its worker never registered.
func (o *Orchestrator) observeJobVM(vm VM, registered bool, dying bool) bool {
	a := vm.Annotation
	if a.JobID == "" || IsRegistration(a.JobID) {
		return false
	}
	if registered {
		o.jobs.sawRegistered(vm.Name)
		return false
	}
	if vm.PowerState == types.VirtualMachinePowerStatePoweredOn && !dying {
		o.jobs.watch(vm.Name, a.JobID, a.JobRegion)
		return false
	}
	// A spawn still running (or rolling back) for the job: the framework releases it itself
	// if the spawn fails.
	if o.caches.SpawnInProgress.Has(a.JobID) || o.caches.ToDelete.Has(vm.Name) {
		return false
	}
	return vm.PowerState == types.VirtualMachinePowerStatePoweredOff || dying
}

// releaseJob gives the job of a dead worker VM back to the queue, once per watched VM. A
// failed release is logged: the API's timeout still frees the job.
func (o *Orchestrator) releaseJob(ctx context.Context, svc hatchery.Services, vmName, why string) {
	jobID, region, ok := o.jobs.claimRelease(vmName)
	if !ok {
		return
	}
	o.releaseWatched(ctx, svc, vmName, watchedJob{jobID: jobID, region: region}, why)
}

func (o *Orchestrator) releaseWatched(ctx context.Context, svc hatchery.Services, vmName string, j watchedJob, why string) {
	ctx = context.WithValue(ctx, fieldJobID, j.jobID)
	if err := svc.ReleaseJob(ctx, j.jobID, j.region); errors.Is(err, hatchery.ErrJobNotReleasable) {
		// Its worker took it after all, between two passes: nothing to do.
		o.log.Debug(ctx, "job %s of VM %q not released: %v", j.jobID, vmName, err)
		return
	} else if err != nil {
		o.log.Warn(ctx, "release job %s of VM %q (%s): %v", j.jobID, vmName, why, err)
		return
	}
	o.log.Info(ctx, "job %s released: VM %q %s before its worker registered", j.jobID, vmName, why)
	o.recordVMError(vmName, fmt.Errorf("job %s released: VM %s before its worker registered", j.jobID, why))
}

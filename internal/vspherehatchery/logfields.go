package vspherehatchery

import (
	"cmp"
	"context"

	"github.com/rockbears/log"
)

// fieldHatchery is the framework's "hatchery" field. The provider sets it itself so that
// its lines name the hatchery whoever calls it.
var fieldHatchery = log.Field("hatchery")

// registerLogFields makes the logger print the context fields of the provider's lines. The
// framework registers the same names on the same logger; registering twice is harmless, and
// "vm" is only ours.
func registerLogFields(l *log.Logger) {
	l.RegisterField(fieldHatchery, fieldVMName, fieldWorkerName, fieldJobID, fieldModel)
}

// withHatchery names the hatchery in the log fields of ctx.
func (p *Provider) withHatchery(ctx context.Context) context.Context {
	return context.WithValue(ctx, fieldHatchery, p.hatcheryName())
}

// vmLogContext sets the log fields known of a VM from its listing: its name, and from its
// annotation the worker it holds (none for a template or an unclaimed provisioned VM), its
// job and its model. Every state change of a VM is logged with these fields (design §6).
func vmLogContext(ctx context.Context, vm VM) context.Context {
	ctx = context.WithValue(ctx, fieldVMName, vm.Name)
	if !vm.HasAnnotation {
		return ctx
	}
	a := vm.Annotation
	if worker := workerOf(a); worker != "" {
		ctx = context.WithValue(ctx, fieldWorkerName, worker)
	}
	if a.JobID != "" {
		ctx = context.WithValue(ctx, fieldJobID, a.JobID)
	}
	if model := cmp.Or(a.WorkerModelPath, a.VMwareModelPath); model != "" {
		ctx = context.WithValue(ctx, fieldModel, model)
	}
	return ctx
}

// workerOf is the worker a VM holds according to its annotation: the claiming worker of a
// reused provisioned VM, none for an idle provisioned VM or a template.
func workerOf(a Annotation) string {
	switch {
	case a.Model:
		return ""
	case a.Provisioning:
		return a.ClaimedBy
	}
	return a.WorkerName
}

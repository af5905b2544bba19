package vspherehatchery

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// reviewProvisioned decides what the cleanup pass does with this hatchery's provision-… VMs
// (the original left them to the provisioning loop, which only ever added some):
//
//   - a claim abandoned by a dead process (claimed, still named provision-…, not claimed by
//     this process, claim older than workerRegistrationTTL) → deleted;
//   - half-provisioned after a restart (powered on, not being provisioned by this process,
//     older than the guest-ready + IP budget) → powered off when it got its IP (it becomes a
//     normal provisioned VM), else deleted;
//   - deprovisioning: the idle provisioned VMs of a model beyond its workerProvisioning
//     number (a lowered number, or a model no longer configured, which means 0) → deleted,
//     newest first, so that the oldest (longest proven) stay.
//
// VMs being provisioned or claimed by this process, or marked for deletion, are not touched.
func (o *Orchestrator) reviewProvisioned(inv Inventory, now time.Time) []cleanupAction {
	var (
		actions []cleanupAction
		// pools are the provisioned VMs that stay, by model, for deprovisioning.
		pools = map[string][]VM{}
	)
	budget := o.timings.GuestReady + o.timings.IP
	for _, vm := range inv {
		a := vm.Annotation
		if vm.Template || !vm.OwnedBy(o.hatcheryName()) || !strings.HasPrefix(vm.Name, ProvisionPrefix) || !a.Provisioning {
			continue
		}
		if o.caches.ToDelete.Has(vm.Name) || o.caches.ProvisioningUsing.Has(vm.Name) {
			continue
		}
		if !a.Claimed.IsZero() {
			if now.Sub(a.Claimed) > o.cfg.WorkerRegistrationTTLDuration() {
				actions = append(actions, o.deprovision(vm, fmt.Sprintf("deprovisioned: claim of %s ago for %q abandoned", now.Sub(a.Claimed).Round(time.Second), a.ClaimedBy)))
			}
			continue
		}
		pending := o.caches.ProvisioningPending.Has(vm.Name)
		if !pending && vm.PowerState == types.VirtualMachinePowerStatePoweredOn && now.Sub(a.Created) > budget {
			if hasWorkingIP(vm) {
				actions = append(actions, o.finishProvisioning(vm))
			} else {
				actions = append(actions, o.deprovision(vm, fmt.Sprintf("deprovisioned: half-provisioned %s ago, no IP address", now.Sub(a.Created).Round(time.Second))))
				continue
			}
		}
		key := provisionedPoolKey(vm)
		pools[key] = append(pools[key], vm)
	}
	for key, vms := range pools {
		surplus := len(vms) - o.provisioningTarget(key)
		if surplus <= 0 {
			continue
		}
		// Only idle VMs go: one being made, or being powered off above, finishes first and
		// is counted again by the next pass.
		idle := slices.DeleteFunc(slices.Clone(vms), func(vm VM) bool {
			return o.caches.ProvisioningPending.Has(vm.Name) || vm.PowerState != types.VirtualMachinePowerStatePoweredOff
		})
		slices.SortStableFunc(idle, func(a, b VM) int { return b.Annotation.Created.Compare(a.Annotation.Created) })
		for _, vm := range idle[:min(surplus, len(idle))] {
			actions = append(actions, o.deprovision(vm, fmt.Sprintf("deprovisioned: %d provisioned VMs of %s, %d wanted", len(vms), key, o.provisioningTarget(key))))
		}
	}
	return actions
}

// deprovision deletes a provisioned VM after claiming it like a spawn would, so that no
// spawn picks it up meanwhile; one claimed by a spawn since the listing is left alone.
func (o *Orchestrator) deprovision(vm VM, reason string) cleanupAction {
	return cleanupAction{vm: vm, reason: reason, run: func(ctx context.Context, svc hatchery.Services) error {
		if !o.caches.ProvisioningUsing.Add(vm.Name) {
			return nil
		}
		defer o.caches.ProvisioningUsing.Remove(vm.Name)
		return o.deleteServer(ctx, svc, vm, reason)
	}}
}

// provisionedPoolKey names the pool of a provisioned VM as the configuration does:
// "v2:<modelVMWare>" or "v1:<group>/<name>".
func provisionedPoolKey(vm VM) string {
	if strings.HasPrefix(vm.Name, ProvisionV1Prefix) {
		return "v1:" + vm.Annotation.WorkerModelPath
	}
	return "v2:" + vm.Annotation.VMwareModelPath
}

// provisioningTarget is the number of provisioned VMs wanted for a pool: the number of the
// first workerProvisioning entry of the model, 0 when the model is not configured.
func (o *Orchestrator) provisioningTarget(key string) int {
	for _, wp := range o.cfg.WorkerProvisioning {
		if wp.ModelVMWare != "" && key == "v2:"+wp.ModelVMWare || wp.ModelPath != "" && key == "v1:"+wp.ModelPath {
			return max(wp.Number, 0)
		}
	}
	return 0
}

// hasWorkingIP tells whether a VM shows the address it was provisioned for: its fixed IP, or
// any IPv4 address with DHCP.
func hasWorkingIP(vm VM) bool {
	if want := vm.Annotation.IPAddress; want != "" {
		return slices.Contains(vm.GuestIPs, want)
	}
	return slices.ContainsFunc(vm.GuestIPs, func(ip string) bool {
		parsed := net.ParseIP(ip)
		return parsed != nil && parsed.To4() != nil
	})
}

// finishProvisioning powers off a provisioned VM whose provisioner died after it got its IP:
// powered off it is as good as one provisioned in one go.
func (o *Orchestrator) finishProvisioning(vm VM) cleanupAction {
	return cleanupAction{vm: vm, reason: "half-provisioned", run: func(ctx context.Context, _ hatchery.Services) error {
		obj, err := o.client.LoadVirtualMachine(ctx, vm.Name)
		if vsphere.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("finish provisioning of VM %q: %w", vm.Name, err)
		}
		if err := o.client.ShutdownVirtualMachine(ctx, obj); err != nil {
			return fmt.Errorf("finish provisioning of VM %q: %w", vm.Name, err)
		}
		o.stampProvisioned(ctx, obj, vm.Annotation)
		o.log.Info(ctx, "half-provisioned VM %q powered off: it has its IP address", vm.Name)
		return nil
	}}
}

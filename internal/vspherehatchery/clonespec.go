package vspherehatchery

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// cloneRequest is one VM to create from a source VM.
type cloneRequest struct {
	Name       string
	Source     *object.VirtualMachine
	SourceName string
	Annotation Annotation
	// FixedIP is the address reserved in the IP pool; "" means DHCP.
	FixedIP string
	// Flavor sizes the clone; nil keeps the source's size.
	Flavor *config.Flavor
}

// buildCloneSpec builds the clone specification of protocol spec §18.13 / seed §6.2.1:
// the source's first NIC re-backed on the configured network with the configured card
// type; the configured datastore and resource pool, linked-clone disk move; Linux
// customization with hostname = VM name and, with a fixed IP, the address, mask, gateway
// and DNS; the annotation; the flavor's CPUs and memory; power on.
func (o *Orchestrator) buildCloneSpec(ctx context.Context, req cloneRequest) (*types.VirtualMachineCloneSpec, error) {
	nic, err := o.sourceNIC(ctx, req)
	if err != nil {
		return nil, err
	}
	pool, err := o.client.LoadResourcePool(ctx)
	if err != nil {
		return nil, fmt.Errorf("clone spec of %q: %w", req.Name, err)
	}
	datastore, err := o.client.LoadDatastore(ctx, o.cfg.DatastoreString)
	if err != nil {
		return nil, fmt.Errorf("clone spec of %q: %w", req.Name, err)
	}
	annotation, err := req.Annotation.Marshal()
	if err != nil {
		return nil, fmt.Errorf("clone spec of %q: %w", req.Name, err)
	}

	poolRef, datastoreRef := pool.Reference(), datastore.Reference()
	spec := &types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{
			Pool:         &poolRef,
			Datastore:    &datastoreRef,
			DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsMoveChildMostDiskBacking),
			DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationEdit,
				Device:    nic,
			}},
		},
		Config: &types.VirtualMachineConfigSpec{
			Annotation: annotation,
			Tools:      &types.ToolsConfigInfo{AfterPowerOn: types.NewBool(true)},
		},
		Customization: o.customization(req.Name, req.FixedIP),
		PowerOn:       true,
		Template:      false,
	}
	if f := req.Flavor; f != nil {
		if f.CPUs > 0 {
			spec.Config.NumCPUs = int32(f.CPUs)
		}
		if f.MemoryMB > 0 {
			spec.Config.MemoryMB = int64(f.MemoryMB)
		}
	}
	return spec, nil
}

// sourceNICTTL is how long the NIC prepared for the clones of one source VM is reused: a
// burst of clones of one template reads its devices and the network's backing once, not
// twice per clone. A source whose NIC an operator changes meanwhile fails one clone at
// worst (its job goes back to the queue); a rebuilt v1 template is a new VM, a new key.
const sourceNICTTL = time.Minute

// nicCache holds the prepared NIC by source VM reference.
type nicCache struct {
	mu      sync.Mutex
	entries map[types.ManagedObjectReference]nicEntry
}

type nicEntry struct {
	at  time.Time
	nic types.BaseVirtualDevice
}

// sourceNIC is the source's first NIC re-backed on the configured network with the
// configured card type, ready for an "edit" device change.
func (o *Orchestrator) sourceNIC(ctx context.Context, req cloneRequest) (types.BaseVirtualDevice, error) {
	key := req.Source.Reference()
	now := o.now()
	c := &o.nics
	// Held while a NIC is prepared: the clones of a burst start together, and all but the
	// first must wait for its answer rather than ask vCenter the same questions.
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && now.Sub(e.at) < sourceNICTTL && !now.Before(e.at) {
		// Shared by the clone specs: a request only reads it (to encode it).
		return e.nic, nil
	}
	devices, err := o.client.LoadVirtualMachineDevices(ctx, req.Source)
	if err != nil {
		return nil, fmt.Errorf("clone spec of %q: devices of %q: %w", req.Name, req.SourceName, err)
	}
	cards := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(cards) == 0 {
		return nil, fmt.Errorf("clone spec of %q: source VM %q has no ethernet card", req.Name, req.SourceName)
	}
	card := *cards[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
	network, err := o.client.LoadNetwork(ctx, o.cfg.NetworkString)
	if err != nil {
		return nil, fmt.Errorf("clone spec of %q: %w", req.Name, err)
	}
	cardName := o.cfg.CardNameOrDefault()
	if err := o.client.SetupEthernetCard(ctx, &card, cardName, network); err != nil {
		return nil, fmt.Errorf("clone spec of %q: %w", req.Name, err)
	}
	nic, err := vsphere.EthernetCardDevice(&card, cardName)
	if err != nil {
		return nil, fmt.Errorf("clone spec of %q: %w", req.Name, err)
	}
	if c.entries == nil {
		c.entries = map[types.ManagedObjectReference]nicEntry{}
	}
	for k, old := range c.entries {
		if now.Sub(old.at) >= sourceNICTTL {
			delete(c.entries, k)
		}
	}
	c.entries[key] = nicEntry{at: now, nic: nic}
	return nic, nil
}

// customization is the Linux guest customization: hostname = VM name, and the fixed IP
// settings when an address was reserved. Without iprange the NIC is set to DHCP: the
// original read a fixed-IP entry that did not exist and panicked (Q7), and vCenter wants one
// adapter mapping per NIC anyway.
func (o *Orchestrator) customization(name, fixedIP string) *types.CustomizationSpec {
	ipSettings := types.CustomizationIPSettings{Ip: &types.CustomizationDhcpIpGenerator{}}
	var global types.CustomizationGlobalIPSettings
	if fixedIP != "" {
		ipSettings = types.CustomizationIPSettings{
			Ip:         &types.CustomizationFixedIp{IpAddress: fixedIP},
			SubnetMask: o.cfg.SubnetMask,
		}
		if o.cfg.Gateway != "" {
			ipSettings.Gateway = []string{o.cfg.Gateway}
		}
		if o.cfg.DNS != "" {
			global.DnsServerList = []string{o.cfg.DNS}
		}
	}
	return &types.CustomizationSpec{
		Identity: &types.CustomizationLinuxPrep{
			HostName: &types.CustomizationFixedName{Name: name},
			// vCenter requires a domain; the workers do not use it.
			Domain: "local",
		},
		GlobalIPSettings: global,
		NicSettingMap:    []types.CustomizationAdapterMapping{{Adapter: ipSettings}},
	}
}

// clone creates the VM described by req (powered on) and returns it.
func (o *Orchestrator) clone(ctx context.Context, req cloneRequest) (*object.VirtualMachine, error) {
	spec, err := o.buildCloneSpec(ctx, req)
	if err != nil {
		return nil, err
	}
	folder, err := o.client.LoadFolder(ctx)
	if err != nil {
		return nil, fmt.Errorf("clone %q from %q: %w", req.Name, req.SourceName, err)
	}
	// A mark left by an earlier failed clone of the same name (a <model>-tmp, say) that
	// never showed up must not doom this one; if that VM does exist, this clone fails on the
	// duplicate name and marks it again.
	o.caches.ToDelete.Remove(req.Name)
	ref, err := o.client.CloneVirtualMachine(ctx, req.Source, folder, req.Name, spec)
	if err != nil {
		// A clone whose wait expired (taskTimeout) or failed late may still produce the
		// VM: marked, it is powered off and deleted by the cleanup pass if it shows up.
		o.markForDeletion(req.Name)
		return nil, fmt.Errorf("clone %q from %q: %w", req.Name, req.SourceName, err)
	}
	vm, err := o.client.NewVirtualMachine(ctx, spec, ref, req.Name)
	if err != nil {
		// The clone exists: let the cleanup pass collect it.
		o.markForDeletion(req.Name)
		return nil, fmt.Errorf("clone %q from %q: %w", req.Name, req.SourceName, err)
	}
	return vm, nil
}

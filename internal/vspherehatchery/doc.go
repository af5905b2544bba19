// Package vspherehatchery is the vSphere provider of hatchery-vsphere: it decides whether a
// worker can be spawned (CanSpawn, CanAllocateResources), keeps the VM annotation format of
// the original CDS hatchery, manages the fixed-IP pool and the in-memory caches, and reads
// the VM inventory through vsphere.VSphereClient.
//
// The decisions are pure functions over a narrow inventory snapshot (see Inventory), so that
// one listing of a few properties serves a whole decision and the rules can be table-tested
// without vCenter.
package vspherehatchery

package vspherehatchery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Annotation is the JSON document stored in a VM's config.annotation (protocol spec §18.11).
// It is the durable state of a CDS VM: VMs created by the original hatchery carry it and must
// be recognised, so the JSON keys, their order and their omitempty rules are kept exactly.
type Annotation struct {
	HatcheryName            string    `json:"hatchery_name,omitempty"`
	WorkerName              string    `json:"worker_name,omitempty"`
	RegisterOnly            bool      `json:"register_only,omitempty"`
	Provisioning            bool      `json:"provisioning,omitempty"`
	WorkerModelPath         string    `json:"worker_model_path,omitempty"`
	VMwareModelPath         string    `json:"vmware_model_path,omitempty"`
	WorkerModelLastModified string    `json:"worker_model_last_modified,omitempty"`
	Model                   bool      `json:"model,omitempty"`
	Created                 time.Time `json:"created"`
	JobID                   string    `json:"job_id,omitempty"`
	IPAddress               string    `json:"ip_address,omitempty"`

	// Keys of our own, after the original's and omitted when zero, so that the original
	// (whose decoder ignores unknown keys) still reads our VMs and we read its VMs as before.
	// They carry what a restart needs to rebuild its view from the inventory alone.

	// Claimed is when a provisioned VM was claimed for a worker (stamped before its
	// power-on); ClaimedBy is that worker's name: the VM keeps its provisioning keys (Q23).
	Claimed   time.Time `json:"claimed,omitzero"`
	ClaimedBy string    `json:"claimed_by,omitempty"`
	// JobRegion is the region of the v2 job the VM runs (job_id), to release it.
	JobRegion string `json:"job_region,omitempty"`
	// Provisioned is when the provisioning of a provision-… VM ended (its guest answered
	// with its address and it was powered off): a VM carrying it may be reused without
	// reading its events. VMs of the original, or of a provisioning cut short before the
	// stamp, are checked against their VmPoweredOffEvent as before.
	Provisioned time.Time `json:"provisioned,omitzero"`
}

// Marshal renders the annotation as the original does (encoding/json, keys in declaration
// order).
func (a Annotation) Marshal() (string, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return "", fmt.Errorf("marshal VM annotation of %q: %w", a.WorkerName, err)
	}
	return string(b), nil
}

// ParseAnnotation decodes a VM annotation. It reports false for anything that is not a CDS
// annotation: an empty string, invalid JSON, or JSON that is not an object (operators write
// free text in annotations of their own VMs, so this must never fail loudly). Unknown keys
// are ignored.
func ParseAnnotation(s string) (Annotation, bool) {
	b := bytes.TrimSpace([]byte(s))
	// json.Unmarshal accepts "null" into a struct without error; only objects are CDS
	// annotations.
	if len(b) == 0 || b[0] != '{' {
		return Annotation{}, false
	}
	var a Annotation
	if err := json.Unmarshal(b, &a); err != nil {
		return Annotation{}, false
	}
	return a, true
}

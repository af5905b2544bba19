package daemon

import (
	"go.opencensus.io/stats/view"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// knownViewNames are the views /mon/metrics/all may describe (protocol spec §23), in the
// order they are listed. OpenCensus cannot enumerate registered views, so they are looked
// up by name; views nobody registered (e.g. the vSphere ones without a vSphere provider)
// are skipped.
var knownViewNames = []string{
	"cds/hatchery/jobs_count",
	"cds/hatchery/jobs_websocket_count",
	"cds/hatchery/jobs_processed_count",
	"cds/hatchery/spawned_worker_count",
	"cds/hatchery/spawning_worker_count",
	"cds/hatchery/spawning_worker_errors_count",
	"cds/hatchery/chan_v1_job_add_count",
	"cds/hatchery/chan_v2_job_add_count",
	"cds/hatchery/chan_worker_starter_job_pop",
	"cds/hatchery/job_received_in_queue_polling_ws_v1_count",
	"cds/hatchery/job_received_in_queue_polling_ws_v2_count",
	"cds/hatchery/pending_workers",
	"cds/hatchery/registering_workers",
	"cds/hatchery/waiting_workers",
	"cds/hatchery/checking_workers",
	"cds/hatchery/building_workers",
	"cds/hatchery/disabled_workers",
	"cds/hatchery/vsphere/worker_vcpus",
	"cds/hatchery/vsphere/worker_memory_mb",
	"cds/hatchery/vsphere/allocated_vcpus",
	"cds/hatchery/vsphere/allocated_memory_mb",
	"cds/hatchery/vsphere/vm_count",
	"cds/hatchery/vsphere/provisioned_vm_count",
	"cds/hatchery/vsphere/template_vcpus",
	"cds/hatchery/vsphere/template_memory_mb",
	"cds/hatchery/vsphere/template_count",
	"cds/hatchery/vsphere/pool_total_vcpus",
	"cds/hatchery/vsphere/pool_total_memory_mb",
	"cds/hatchery/vsphere/pool_total_vm_count",
	"cds/hatchery/vsphere/resource_pool_cpu_max_mhz",
	"cds/hatchery/vsphere/resource_pool_cpu_usage_mhz",
	"cds/hatchery/vsphere/resource_pool_cpu_unreserved_mhz",
	"cds/hatchery/vsphere/resource_pool_memory_max_bytes",
	"cds/hatchery/vsphere/resource_pool_memory_usage_bytes",
	"cds/hatchery/vsphere/resource_pool_memory_unreserved_bytes",
	"cds/hatchery/vsphere/ip_used_count",
	"cds/hatchery/vsphere/ip_total_count",
}

// registeredViewNames lists the candidate view names: the framework's and vSphere's, then
// the HTTP server's.
func registeredViewNames() []string {
	names := append([]string(nil), knownViewNames...)
	for _, v := range hatchery.HTTPServerViews() {
		names = append(names, v.Name)
	}
	for _, views := range [][]*view.View{lifecycle.Views(), vsphere.MetricViews(), cds.MetricViews()} {
		for _, v := range views {
			names = append(names, v.Name)
		}
	}
	return names
}

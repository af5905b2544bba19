// Package faults is the fault-injection suite of hatchery-vsphere: end-to-end scenarios
// (in its tests) that run the real daemon against the simulated vCenter (simenv) and the
// simulated CDS API (cdssim), break one thing at a time, and check afterwards that every
// job was served exactly once or released, that no VM and no IP address was leaked, and
// that no goroutine outlived the daemon.
//
// The package itself holds what the scenarios need beyond the simulators' own knobs: Link,
// a TCP relay in front of the vCenter that can cut the network; APIFront, an HTTP front of
// the CDS API that can answer 500s or hang; and WriteReport, which renders the results
// table of docs/reliability.md.
//
// It runs with every `go test ./...` (`make test`; skipped with -short). `make faults` runs
// it alone and writes docs/reliability.md (`go test -race -count=1 ./internal/faults/ -args
// -report docs/reliability.md`; FAULTS_REPORT=path does the same).
package faults

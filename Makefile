# hatchery-vsphere — every target works on a machine with Go (and gcc for -race).
GO      ?= go
BIN     ?= hatchery-vsphere
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PKG     := github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery
LDFLAGS := -s -w -X $(PKG).GitHash=$(VERSION) -X $(PKG).BuildTime=$(shell date -u +%FT%TZ)

.PHONY: build test lint generate verify-generate bench demo docker faults

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/hatchery-vsphere

# The README's test command; .ci/run calls it.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 14m ./...

# The fault-injection suite (also run, without the report, by `make test`): writes
# docs/reliability.md, the table of its scenarios.
faults:
	$(GO) test -race -count=1 -timeout 10m -run . ./internal/faults/ -args -report docs/reliability.md

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-clean:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if $(GO) run honnef.co/go/tools/cmd/staticcheck@2025.1.1 -version >/dev/null 2>&1; then \
		$(GO) run honnef.co/go/tools/cmd/staticcheck@2025.1.1 ./...; \
	else echo "staticcheck not installable here: skipped"; fi

generate:
	$(GO) generate ./...

# Fails when the committed mock differs from what mockgen writes from the interface.
verify-generate: generate
	@git diff --exit-code -- mock_vsphere/ || (echo "mock_vsphere is stale: run 'make generate' and commit" && exit 1)

# The Go benchmarks of the hot pure functions, then the load harness, which writes
# docs/benchmarks.md (with those benchmarks' output) in a few minutes.
HOT_BENCH := ParseAnnotation|NewInventory|CanAllocate|FindAndReserve
bench:
	@out=$$(mktemp); \
	$(GO) test -run '^$$' -bench '$(HOT_BENCH)' -benchmem ./internal/vspherehatchery/ > $$out || { cat $$out; rm -f $$out; exit 1; }; \
	cat $$out; \
	$(GO) run ./cmd/hatchery-vsphere bench --out docs/benchmarks.md --gobench $$out; rc=$$?; rm -f $$out; exit $$rc

demo:
	$(GO) run ./cmd/hatchery-vsphere demo

docker:
	docker build -t hatchery-vsphere:$(VERSION) .

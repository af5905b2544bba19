package hatchery

// Build information, set at link time, e.g.
//
//	go build -ldflags "-X github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery.Version=0.57.0
//	  -X github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery.GitHash=$(git rev-parse HEAD)
//	  -X github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery.BuildTime=$(date -u +%FT%TZ)"
//
// They are variables, not constants, so that the linker can set them.
var (
	// Version is reported in the Version monitoring line, at v2 sign-in and on /mon/version.
	// The CDS API compares it with its own version for equality (quirk Q30), so the default is
	// the version of the CDS release this hatchery is a drop-in replacement for.
	Version = "0.57.0"
	// GitHash is the commit the binary was built from ("" when unknown).
	GitHash = ""
	// BuildTime is when the binary was built ("" when unknown).
	BuildTime = ""
)

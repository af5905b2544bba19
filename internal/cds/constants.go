package cds

// Requirement types (section 22.1).
const (
	RequirementBinary   = "binary"
	RequirementModel    = "model"
	RequirementHostname = "hostname"
	RequirementPlugin   = "plugin"
	RequirementService  = "service"
	RequirementMemory   = "memory"
	RequirementOSArch   = "os-architecture"
	RequirementRegion   = "region"
	RequirementSecret   = "secret"
	RequirementFlavor   = "flavor"
)

// Worker-model types (section 22.2). v1 knows all four, v2 all but host.
const (
	ModelTypeDocker    = "docker"
	ModelTypeHost      = "host"
	ModelTypeOpenstack = "openstack"
	ModelTypeVSphere   = "vsphere"
)

// v1 job and worker statuses, plus the synthetic pool statuses Pending and Registering
// (section 22.3).
const (
	StatusWaiting     = "Waiting"
	StatusChecking    = "Checking"
	StatusBuilding    = "Building"
	StatusSuccess     = "Success"
	StatusFail        = "Fail"
	StatusDisabled    = "Disabled"
	StatusPending     = "Pending"
	StatusRegistering = "Registering"
)

// v2 run-job statuses (section 22.3).
const (
	V2StatusUnknown    = ""
	V2StatusBlocked    = "Blocked"
	V2StatusWaiting    = "Waiting"
	V2StatusScheduling = "Scheduling"
	V2StatusBuilding   = "Building"
	V2StatusFail       = "Fail"
	V2StatusStopped    = "Stopped"
	V2StatusSuccess    = "Success"
	V2StatusCancelled  = "Cancelled"
	V2StatusSkipped    = "Skipped"
	V2StatusRetrying   = "Retrying"
)

// v2 job-info levels (section 21.7).
const (
	V2InfoLevelInfo    = "info"
	V2InfoLevelWarning = "warning"
	V2InfoLevelError   = "error"
)

// Monitoring line statuses (section 4.2).
const (
	MonitoringStatusOK    = "OK"
	MonitoringStatusWarn  = "WARN"
	MonitoringStatusAlert = "AL"
)

// v1 spawn-info message ids (section 12.3).
const (
	MsgSpawnInfoHatcheryStarts     = "MsgSpawnInfoHatcheryStarts"
	MsgSpawnInfoHatcheryErrorSpawn = "MsgSpawnInfoHatcheryErrorSpawn"
	MsgSpawnInfoDeprecatedModel    = "MsgSpawnInfoDeprecatedModel"
)

// Special names (section 22.4).
const (
	SharedInfraGroupName   = "shared.infra"
	ServiceTypeHatchery    = "hatchery"
	HeaderAPIPubSigningKey = "X-Api-Pub-Signing-Key"
	HeaderRemoteTime       = "X-CDS-RemoteTime"
	// DateLayout formats the Date and X-CDS-RemoteTime request headers (section 2.2).
	DateLayout = "2 Jan 2006 15:04:05 -0700"
)

// WebSocket event and filter values (sections 7.1, 21.10).
const (
	EventTypeRunWorkflowJob = "sdk.EventRunWorkflowJob"
	WebsocketFilterQueue    = "queue"
	WebsocketStatusOK       = "OK"
	WebsocketStatusKO       = "KO"
)

// IsUUID tells whether s is a UUID in one of the forms the original accepts to select the
// v2 worker JWT (section 15): 36-char hyphenated, "urn:uuid:"-prefixed, brace-wrapped, or 32
// hex digits.
func IsUUID(s string) bool {
	switch len(s) {
	case 36:
	case 36 + 9:
		if len(s) < 9 || !equalFoldASCII(s[:9], "urn:uuid:") {
			return false
		}
		s = s[9:]
	case 36 + 2:
		if s[0] != '{' || s[len(s)-1] != '}' {
			return false
		}
		s = s[1 : len(s)-1]
	case 32:
		for i := 0; i < len(s); i++ {
			if !isHex(s[i]) {
				return false
			}
		}
		return true
	default:
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

package vspherehatchery

import (
	"testing"
	"time"
)

// specExample is the annotation example of protocol spec §18.11, as the original writes it.
const specExample = `{"hatchery_name":"vsphere-a","worker_name":"calm-turing","worker_model_path":"grp/debian12","vmware_model_path":"debian12","worker_model_last_modified":"1717000000","created":"2025-01-10T08:00:00.1Z","job_id":"98765","ip_address":"10.0.0.12"}`

func TestParseAnnotationSpecExample(t *testing.T) {
	a, ok := ParseAnnotation(specExample)
	if !ok {
		t.Fatal("the original's annotation is not recognised as a CDS annotation")
	}
	want := Annotation{
		HatcheryName:            "vsphere-a",
		WorkerName:              "calm-turing",
		WorkerModelPath:         "grp/debian12",
		VMwareModelPath:         "debian12",
		WorkerModelLastModified: "1717000000",
		Created:                 time.Date(2025, 1, 10, 8, 0, 0, 100_000_000, time.UTC),
		JobID:                   "98765",
		IPAddress:               "10.0.0.12",
	}
	if !a.Created.Equal(want.Created) {
		t.Fatalf("created = %v, want %v", a.Created, want.Created)
	}
	a.Created = want.Created
	if a != want {
		t.Fatalf("parsed %+v, want %+v", a, want)
	}
	got, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got != specExample {
		t.Fatalf("round trip differs:\n got %s\nwant %s", got, specExample)
	}
}

func TestAnnotationMarshalOmitsEmptyButKeepsCreated(t *testing.T) {
	s, err := Annotation{}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"created":"0001-01-01T00:00:00Z"}`; s != want {
		t.Fatalf("got %s, want %s", s, want)
	}
	s, err = Annotation{HatcheryName: "h", RegisterOnly: true, Provisioning: true, Model: true,
		Created: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"hatchery_name":"h","register_only":true,"provisioning":true,"model":true,"created":"2024-05-01T00:00:00Z"}`; s != want {
		t.Fatalf("got %s, want %s", s, want)
	}
}

func TestParseAnnotationRejectsNonCDS(t *testing.T) {
	for _, s := range []string{
		"",
		"   ",
		"my build server, do not touch",
		"null",
		"[]",
		`"text"`,
		"42",
		`{"hatchery_name":`,
		`{"created":"yesterday"}`,
		`{"provisioning":"yes"}`,
	} {
		if a, ok := ParseAnnotation(s); ok {
			t.Errorf("ParseAnnotation(%q) = %+v, true; want not a CDS annotation", s, a)
		}
	}
}

func TestParseAnnotationIgnoresUnknownKeys(t *testing.T) {
	a, ok := ParseAnnotation(` {"hatchery_name":"h","future_key":{"x":[1,2]},"provisioning":true,"created":"2025-01-10T08:00:00Z"} `)
	if !ok {
		t.Fatal("annotation with an unknown key not recognised")
	}
	if a.HatcheryName != "h" || !a.Provisioning {
		t.Fatalf("got %+v", a)
	}
}

func FuzzParseAnnotation(f *testing.F) {
	for _, s := range []string{specExample, "", "null", "{}", `{"model":true}`, "free text", `{"created":1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := ParseAnnotation(s)
		if !ok {
			if a != (Annotation{}) {
				t.Fatalf("rejected annotation %q returned a non-zero value %+v", s, a)
			}
			return
		}
		// What we parse we can write back, and read again to the same value.
		out, err := a.Marshal()
		if err != nil {
			return // e.g. a year outside RFC 3339's range: not writable, but no panic
		}
		b, ok := ParseAnnotation(out)
		if !ok {
			t.Fatalf("re-parse of %q failed", out)
		}
		if !a.Created.Equal(b.Created) {
			t.Fatalf("created changed: %v -> %v", a.Created, b.Created)
		}
		a.Created, b.Created = time.Time{}, time.Time{}
		if a != b {
			t.Fatalf("round trip changed %+v -> %+v", a, b)
		}
	})
}

// Our own keys come after the original's (whose decoder ignores them) and read back.
func TestAnnotationOwnKeysFollowTheOriginals(t *testing.T) {
	at := time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)
	a := Annotation{HatcheryName: "h", Provisioning: true, Created: at, IPAddress: "10.0.0.12",
		Claimed: at.Add(time.Hour), ClaimedBy: "calm-turing", JobRegion: "eu", Provisioned: at.Add(time.Minute)}
	s, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"hatchery_name":"h","provisioning":true,"created":"2025-01-10T08:00:00Z","ip_address":"10.0.0.12",` +
		`"claimed":"2025-01-10T09:00:00Z","claimed_by":"calm-turing","job_region":"eu","provisioned":"2025-01-10T08:01:00Z"}`
	if s != want {
		t.Fatalf("got  %s\nwant %s", s, want)
	}
	back, ok := ParseAnnotation(s)
	if !ok || back != a {
		t.Fatalf("read back %+v, want %+v", back, a)
	}
}

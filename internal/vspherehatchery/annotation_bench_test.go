package vspherehatchery

import "testing"

// BenchmarkParseAnnotation is the decode every listed CDS VM costs a decision.
func BenchmarkParseAnnotation(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseAnnotation(specExample); !ok {
			b.Fatal("the spec example is not recognised")
		}
	}
}

// BenchmarkParseAnnotationNonCDS is the cost of an unrelated VM's free-text annotation, the
// common case in a shared datacenter: it must be rejected without a JSON decode.
func BenchmarkParseAnnotationNonCDS(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseAnnotation("build server of team X, ask before deleting"); ok {
			b.Fatal("free text read as a CDS annotation")
		}
	}
}

package simenv

import "testing"

func BenchmarkCreatePlainVMs(b *testing.B) {
	for b.Loop() {
		env, err := New(b.Context(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := env.CreatePlainVMs(b.Context(), 5000); err != nil {
			b.Fatal(err)
		}
		env.Close()
	}
}

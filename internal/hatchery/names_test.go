package hatchery

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

var workerNameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

func TestGenerateWorkerNameShape(t *testing.T) {
	for _, prefix := range []string{"", PrefixRegister, PrefixProvisionV1, PrefixProvisionV2} {
		for range 500 {
			name := GenerateWorkerName(prefix)
			if len(name) > MaxWorkerNameLength || !workerNameRE.MatchString(name) {
				t.Fatalf("invalid worker name %q", name)
			}
			if prefix != "" && !strings.HasPrefix(name, prefix+"-") {
				t.Fatalf("name %q lacks prefix %q", name, prefix)
			}
			if prefix == "" && (strings.HasPrefix(name, "register-") || strings.HasPrefix(name, "provision-")) {
				t.Fatalf("job worker name %q looks like a special one", name)
			}
		}
	}
}

func TestGenerateWorkerNameUnique(t *testing.T) {
	g := NewNameGenerator(rand.New(rand.NewPCG(1, 2)))
	seen := make(map[string]bool)
	for i := range 10000 {
		name := g.Generate("")
		if seen[name] {
			t.Fatalf("name %q issued twice within %d names", name, i)
		}
		seen[name] = true
	}
}

func TestGenerateWorkerNameShapes(t *testing.T) {
	g := NewNameGenerator(rand.New(rand.NewPCG(3, 4)))
	var but, and, plain int
	for range 300 {
		name := g.Generate(PrefixProvisionV2)
		switch base := strings.TrimPrefix(name, PrefixProvisionV2+"-"); {
		case strings.Contains(base, "-but-"):
			but++
		case strings.Contains(base, "-and-"):
			and++
		default:
			plain++
		}
	}
	if but == 0 || and == 0 || plain == 0 {
		t.Errorf("all three shapes should appear: but=%d and=%d plain=%d", but, and, plain)
	}
}

func TestSlugName(t *testing.T) {
	for in, want := range map[string]string{
		"  Provision-V1-calm_but_Épique_noether  ": "provision-v1-calm-but-epique-noether",
		"__a__b__":    "a-b",
		"Schrödinger": "schrodinger",
	} {
		if got := slugName(in); got != want {
			t.Errorf("slugName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNameWordLists(t *testing.T) {
	for _, list := range [][]string{nameAdjectives, nameScientists} {
		seen := make(map[string]bool)
		for _, w := range list {
			if seen[w] || !workerNameRE.MatchString(w) || strings.Contains(w, "-") {
				t.Errorf("bad or duplicate word %q", w)
			}
			seen[w] = true
		}
	}
}

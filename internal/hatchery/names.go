package hatchery

import (
	"math/rand/v2"
	"strings"
	"sync"
	"unicode"
)

// Worker name prefixes (protocol spec §14). They carry meaning: "register-" VMs are
// registrations, "provision-" VMs are idle pre-provisioned VMs (not counted as started
// workers and never treated as AWOL).
const (
	PrefixRegister    = "register"
	PrefixProvisionV1 = "provision-v1"
	PrefixProvisionV2 = "provision-v2"
)

// MaxWorkerNameLength is the longest worker name: it is also a VM name and a DNS label.
const MaxWorkerNameLength = 63

// nameRecentSize is how many recently issued names a NameGenerator refuses to issue again.
// The shortest shape (<adj>_<surname>) has a few tens of thousands of combinations, so without
// this memory two workers started by the same process could collide within a few hundred
// draws, and a VM name collision fails the clone.
const nameRecentSize = 1 << 14

// nameMaxDraws bounds the redraws of one name; reaching it would need a name space nearly
// exhausted by the recent set, which the list sizes make impossible.
const nameMaxDraws = 1000

// NameGenerator draws worker names and remembers the last ones it issued so that it does not
// issue them again. It is safe for concurrent use.
type NameGenerator struct {
	mu     sync.Mutex
	rnd    *rand.Rand
	recent map[string]struct{}
	ring   []string
	next   int
}

// NewNameGenerator returns a generator drawing from rnd, or from a randomly seeded source
// when rnd is nil.
func NewNameGenerator(rnd *rand.Rand) *NameGenerator {
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &NameGenerator{
		rnd:    rnd,
		recent: make(map[string]struct{}, nameRecentSize),
		ring:   make([]string, nameRecentSize),
	}
}

var defaultNameGenerator = NewNameGenerator(nil)

// GenerateWorkerName returns a fresh worker name with the given prefix (one of the Prefix
// constants, or "" for a job worker), e.g. "calm-and-lucid-noether" or
// "provision-v2-brave-hopper": at most 63 characters of [a-z0-9-].
func GenerateWorkerName(prefix string) string {
	return defaultNameGenerator.Generate(prefix)
}

// Generate returns a fresh worker name with the given prefix; see GenerateWorkerName.
func (g *NameGenerator) Generate(prefix string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	maxBase := MaxWorkerNameLength
	if prefix != "" {
		maxBase = MaxWorkerNameLength - len(prefix) - 1
	}
	var name string
	for range nameMaxDraws {
		base := g.drawBase()
		if len(base) > maxBase {
			continue
		}
		name = base
		if prefix != "" {
			name = prefix + "-" + base
		}
		name = slugName(name)
		if len(name) > MaxWorkerNameLength {
			// Only a prefix longer than the limit gets here.
			name = strings.Trim(name[:MaxWorkerNameLength], "-")
		}
		if _, seen := g.recent[name]; !seen {
			break
		}
	}
	g.remember(name)
	return name
}

func (g *NameGenerator) drawBase() string {
	adj := func() string { return nameAdjectives[g.rnd.IntN(len(nameAdjectives))] }
	surname := nameScientists[g.rnd.IntN(len(nameScientists))]
	switch g.rnd.IntN(3) {
	case 0:
		return adj() + "_but_" + adj() + "_" + surname
	case 1:
		return adj() + "_and_" + adj() + "_" + surname
	default:
		return adj() + "_" + surname
	}
}

func (g *NameGenerator) remember(name string) {
	if old := g.ring[g.next]; old != "" {
		delete(g.recent, old)
	}
	g.ring[g.next] = name
	g.recent[name] = struct{}{}
	g.next = (g.next + 1) % len(g.ring)
}

// nameASCII maps the accented letters a prefix or a word could carry to ASCII.
var nameASCII = strings.NewReplacer(
	"à", "a", "á", "a", "â", "a", "ã", "a", "ä", "a", "å", "a", "æ", "ae",
	"ç", "c", "è", "e", "é", "e", "ê", "e", "ë", "e",
	"ì", "i", "í", "i", "î", "i", "ï", "i", "ñ", "n",
	"ò", "o", "ó", "o", "ô", "o", "õ", "o", "ö", "o", "ø", "o", "œ", "oe",
	"ù", "u", "ú", "u", "û", "u", "ü", "u", "ý", "y", "ÿ", "y", "ß", "ss",
	"À", "A", "Á", "A", "Â", "A", "Ã", "A", "Ä", "A", "Å", "A", "Æ", "AE",
	"Ç", "C", "È", "E", "É", "E", "Ê", "E", "Ë", "E",
	"Ì", "I", "Í", "I", "Î", "I", "Ï", "I", "Ñ", "N",
	"Ò", "O", "Ó", "O", "Ô", "O", "Õ", "O", "Ö", "O", "Ø", "O", "Œ", "OE",
	"Ù", "U", "Ú", "U", "Û", "U", "Ü", "U", "Ý", "Y",
)

// slugName lowercases s, maps accented letters to ASCII, replaces everything outside
// [a-z0-9] by "-", collapses runs of "-" and trims them at both ends (spec §14).
func slugName(s string) string {
	s = nameASCII.Replace(strings.TrimSpace(s))
	var b strings.Builder
	b.Grow(len(s))
	dash := false
	for _, r := range s {
		r = unicode.ToLower(r)
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	return b.String()
}

// nameAdjectives and nameScientists are our own word lists; the exact words are not
// protocol-relevant (spec §14), only the resulting character set and length.
var nameAdjectives = []string{
	"able", "adept", "agile", "agreeable", "airy", "amber", "amiable", "ample", "ardent",
	"artful", "astute", "balmy", "blithe", "bold", "bouncy", "brave", "breezy", "bright",
	"brisk", "bubbly", "buoyant", "calm", "candid", "capable", "careful", "cheerful",
	"cheery", "chipper", "civil", "classy", "clear", "clever", "cosmic", "cozy", "crisp",
	"curious", "daring", "dapper", "dazzling", "deft", "devoted", "diligent", "discreet",
	"dreamy", "dynamic", "eager", "earnest", "easy", "elated", "elegant", "eloquent",
	"epic", "exact", "fair", "faithful", "fearless", "festive", "fluent", "fond", "frank",
	"fresh", "friendly", "frosty", "frugal", "gallant", "generous", "genial", "gentle",
	"gifted", "glad", "gleaming", "glowing", "graceful", "gracious", "grand", "grateful",
	"gusty", "handy", "happy", "hardy", "hearty", "helpful", "heroic", "honest", "hopeful",
	"humble", "jaunty", "jolly", "jovial", "joyful", "jubilant", "keen", "kind", "kindly",
	"lavish", "lively", "logical", "loyal", "lucid", "lucky", "lush", "majestic", "mellow",
	"merry", "mighty", "mild", "mindful", "misty", "modest", "neat", "nifty", "nimble",
	"noble", "orderly", "patient", "peaceful", "perky", "placid", "playful", "plucky",
	"polished", "polite", "precise", "prudent", "punctual", "quick", "quiet", "quirky",
	"radiant", "rapid", "ready", "regal", "relaxed", "reliable", "resolute", "robust",
	"rosy", "rustic", "sage", "serene", "sharp", "shiny", "silent", "sincere", "sleek",
	"smart", "snappy", "snug", "solid", "sparkly", "spirited", "sprightly", "spry",
	"stable", "stately", "steady", "stellar", "stoic", "sturdy", "sublime", "subtle",
	"sunny", "superb", "swift", "tender", "thrifty", "tidy", "tireless", "tranquil",
	"trusty", "unruffled", "upbeat", "valiant", "velvet", "vibrant", "vigilant", "vivid",
	"warm", "wise", "witty", "zealous", "zesty", "zippy",
}

var nameScientists = []string{
	"agnesi", "alhazen", "ampere", "archimedes", "avogadro", "babbage", "backus", "banach",
	"bardeen", "bell", "bernoulli", "bohr", "boltzmann", "boole", "born", "bose", "bragg",
	"brahe", "cantor", "carnot", "carson", "cauchy", "cavendish", "chandrasekhar",
	"clausius", "copernicus", "cori", "coulomb", "crick", "curie", "dalton", "darwin",
	"democritus", "descartes", "dijkstra", "dirac", "doppler", "edison", "ehrenfest",
	"einstein", "eratosthenes", "euclid", "euler", "fahrenheit", "faraday", "fermat",
	"fermi", "feynman", "fibonacci", "fleming", "foucault", "fourier", "franklin",
	"fresnel", "galileo", "galois", "gauss", "geiger", "germain", "gibbs", "goodall",
	"hahn", "hamilton", "hamming", "hawking", "heisenberg", "helmholtz", "hertz",
	"hilbert", "hipparchus", "hodgkin", "hooke", "hopper", "hubble", "huygens", "hypatia",
	"jacobi", "jenner", "joule", "kapitsa", "kelvin", "kepler", "kilby", "kirchhoff",
	"knuth", "kolmogorov", "kovalevskaya", "lagrange", "lamarck", "lamport", "landau",
	"laplace", "laue", "lavoisier", "leavitt", "lebedev", "leibniz", "lemaitre", "liebig",
	"linnaeus", "liskov", "lomonosov", "lorentz", "lovelace", "lyell", "maxwell",
	"mcclintock", "meitner", "mendel", "mendeleev", "michelson", "millikan", "minkowski",
	"minsky", "mobius", "morse", "napier", "neumann", "newton", "nightingale", "nobel",
	"noether", "noyce", "ohm", "oppenheimer", "ostrom", "pascal", "pasteur", "pauli",
	"pauling", "pavlov", "payne", "planck", "poincare", "ptolemy", "pythagoras", "raman",
	"ramanujan", "rayleigh", "riemann", "ritchie", "roentgen", "rutherford", "sagan",
	"sakharov", "sanger", "schrodinger", "shannon", "snell", "sommerfeld", "somerville",
	"stokes", "tamm", "tesla", "thales", "thomson", "torricelli", "turing", "ulam",
	"vaughan", "volta", "wallace", "watt", "weber", "wiener", "wigner", "wozniak", "wu",
	"yalow", "yukawa", "zeeman", "zuse",
}

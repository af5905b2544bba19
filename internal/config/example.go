package config

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// exampleEntries are the sample entries written, commented out, for each array of tables.
var exampleEntries = map[reflect.Type]any{
	reflect.TypeFor[WorkerProvisioning]():    WorkerProvisioning{ModelVMWare: "debian12", Number: 2},
	reflect.TypeFor[GuestCredential]():       GuestCredential{ModelVMWare: "debian12", Username: "cds", Password: "change-me"},
	reflect.TypeFor[DefaultWorkerModelsV2](): DefaultWorkerModelsV2{WorkerModelV2: "MYPROJ/github/my-org/my-repo/debian12@main", Binaries: []string{"docker"}},
	reflect.TypeFor[Flavor]():                Flavor{Name: "small", CPUs: 2, MemoryMB: 4096},
}

// exampleNotes are extra comment lines of `config new`, by TOML path.
var exampleNotes = map[string]string{
	apiPath + ".token":   "Fill in token, tokenV2 or both.",
	apiPath + ".tokenV2": "Fill in token, tokenV2 or both.",
}

// NewExample renders the commented TOML written by `config new`: every key with its
// default and its comment, the mandatory vCenter and CDS values left empty, one commented
// sample entry per array of tables. An empty name gets cds-hatchery-vsphere-<random>; a
// nil key gets a fresh 2048-bit key. The output is rendered from the struct tags, so it
// cannot drift from the struct.
func NewExample(name string, key *rsa.PrivateKey) ([]byte, error) {
	if name == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("random name: %w", err)
		}
		name = "cds-hatchery-vsphere-" + hex.EncodeToString(b[:])
	}
	if key == nil {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("generate RSA key: %w", err)
		}
	}
	f := Defaults()
	f.Hatchery.VSphere.CommonConfiguration.Name = name
	f.Hatchery.VSphere.CommonConfiguration.RSAPrivateKey = string(pem.EncodeToMemory(&pem.Block{
		Type:  "RSA PRIVATE KEY",
		Bytes: x509.MarshalPKCS1PrivateKey(key),
	}))

	var b bytes.Buffer
	b.WriteString(`# hatchery-vsphere configuration, in the layout of the CDS engine configuration file:
# an existing file of the original vSphere hatchery works as is, and other services'
# sections are ignored. Keys are case-insensitive. Absent keys take the values shown here.
# Every key can be overridden by an environment variable named CDS_ and its path in
# capitals joined with _, e.g. CDS_HATCHERY_VSPHERE_PASSWORD or
# CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_TOKENV2 (lists: a,b,c; arrays of tables:
# a JSON array of objects).
# Fill in the vCenter user, endpoint, password and datacenterString, the CDS API URL and
# at least one CDS token, then run: hatchery-vsphere config check --config <this file>
`)
	e := exampleWriter{b: &b}
	e.table(reflect.ValueOf(f).Elem(), nil, 0, "")
	return b.Bytes(), nil
}

type exampleWriter struct {
	b *bytes.Buffer
}

func (e *exampleWriter) line(indent int, prefix, text string) {
	e.b.WriteString(strings.Repeat("  ", indent))
	e.b.WriteString(prefix)
	e.b.WriteString(text)
	e.b.WriteByte('\n')
}

// table writes the keys of struct v, then its sub-tables, then its arrays of tables (TOML
// wants a table's own keys before any sub-table header). prefix is "# " inside a
// commented-out sample entry.
func (e *exampleWriter) table(v reflect.Value, path []string, indent int, prefix string) {
	t := v.Type()
	var subs, arrays []int
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key := keyOf(sf)
		if key == "" || !sf.IsExported() {
			continue
		}
		switch {
		case sf.Type.Kind() == reflect.Struct:
			subs = append(subs, i)
			continue
		case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct:
			arrays = append(arrays, i)
			continue
		}
		fpath := pathString(append(append([]string(nil), path...), key))
		comment := sf.Tag.Get("comment")
		if comment != "" {
			e.line(indent, prefix, "# "+comment)
		}
		if note := exampleNotes[fpath]; note != "" {
			e.line(indent, prefix, "# "+note)
		} else if strings.Contains(comment, "(mandatory)") && v.Field(i).IsZero() {
			e.line(indent, prefix, "# Fill this in.")
		}
		e.line(indent, prefix, key+" = "+tomlValue(v.Field(i)))
	}
	for _, i := range subs {
		sf := t.Field(i)
		sub := append(append([]string(nil), path...), keyOf(sf))
		e.b.WriteString("\n")
		if comment := sf.Tag.Get("comment"); comment != "" {
			e.line(indent, prefix, "# "+comment)
		}
		e.line(indent, prefix, "["+pathString(sub)+"]")
		e.table(v.Field(i), sub, indent+1, prefix)
	}
	for _, i := range arrays {
		sf := t.Field(i)
		sub := append(append([]string(nil), path...), keyOf(sf))
		sample, ok := exampleEntries[sf.Type.Elem()]
		if !ok {
			// A new array of tables needs a sample entry: caught by the tests.
			panic(fmt.Sprintf("config: no example entry for %s", pathString(sub)))
		}
		e.b.WriteString("\n")
		if comment := sf.Tag.Get("comment"); comment != "" {
			e.line(indent, prefix, "# "+comment+" (sample entry, remove the # to use it; repeat the block for more)")
		}
		e.line(indent, "# ", "[["+pathString(sub)+"]]")
		e.table(reflect.ValueOf(sample), sub, indent, "#   ")
	}
}

// tomlValue renders a scalar or a list of scalars as TOML.
func tomlValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return tomlString(v.String())
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Float64:
		x := v.Float()
		switch {
		case math.IsNaN(x):
			return "nan"
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		}
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return s
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = tomlValue(v.Index(i))
		}
		return "[" + strings.Join(items, ", ") + "]"
	default:
		panic(fmt.Sprintf("config: cannot render %s as TOML", v.Kind()))
	}
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

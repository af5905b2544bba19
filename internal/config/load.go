package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// EnvPrefix starts the name of every environment override.
const EnvPrefix = "CDS_"

// Load reads the CDS engine TOML file at path, applies the documented defaults to the keys
// the file does not set, then the environment overrides found in environ (KEY=VALUE
// entries, as os.Environ returns them). It does not validate: call Validate.
func Load(path string, environ []string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	f, err := Parse(data, environ)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return f, nil
}

// Parse is Load on the content of a file.
func Parse(data []byte, environ []string) (*File, error) {
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse TOML: %w", err)
	}
	// Keys are case-insensitive, as with the original: fold them once here, merging
	// tables written with different cases, so that the decoder looks keys up directly.
	// The decoding into the struct is ours rather than viper's, because viper cannot
	// tell an absent key from an explicit zero (quirk Q1) and its AutomaticEnv does not
	// see keys absent from the file (quirk Q2).
	folded, err := foldTable(raw, nil)
	if err != nil {
		return nil, err
	}
	d := decoder{env: envMap(environ)}
	f := &File{}
	d.decodeStruct(reflect.ValueOf(f).Elem(), folded, nil, false)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	sort.Strings(d.unknown)
	f.unknownKeys = d.unknown
	return f, nil
}

// foldTable returns m with lower-cased keys, recursively. Two keys equal but for case
// are merged when both are tables, and are an error otherwise.
func foldTable(m map[string]any, path []string) (map[string]any, error) {
	out := make(map[string]any, len(m))
	// Sorted, so that errors and merges do not depend on map order.
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kpath := append(append([]string(nil), path...), k)
		v, err := foldValue(m[k], kpath)
		if err != nil {
			return nil, err
		}
		lk := strings.ToLower(k)
		prev, dup := out[lk]
		if !dup {
			out[lk] = v
			continue
		}
		if out[lk], err = merge(prev, v, kpath); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// merge combines two folded values of the same key: tables merge key by key, anything
// else is a duplicate.
func merge(a, b any, path []string) (any, error) {
	am, ok1 := a.(map[string]any)
	bm, ok2 := b.(map[string]any)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%s: key given twice (keys are case-insensitive)", pathString(path))
	}
	for k, bv := range bm {
		if av, dup := am[k]; dup {
			mv, err := merge(av, bv, append(append([]string(nil), path...), k))
			if err != nil {
				return nil, err
			}
			am[k] = mv
			continue
		}
		am[k] = bv
	}
	return am, nil
}

func foldValue(v any, path []string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		return foldTable(x, path)
	case []map[string]any:
		items := make([]any, len(x))
		for i, item := range x {
			folded, err := foldTable(item, path)
			if err != nil {
				return nil, err
			}
			items[i] = folded
		}
		return items, nil
	case []any:
		items := make([]any, len(x))
		for i, item := range x {
			folded, err := foldValue(item, path)
			if err != nil {
				return nil, err
			}
			items[i] = folded
		}
		return items, nil
	default:
		return v, nil
	}
}

// Defaults returns a configuration holding only the documented defaults.
func Defaults() *File {
	f := &File{}
	d := decoder{}
	d.decodeStruct(reflect.ValueOf(f).Elem(), nil, nil, false)
	return f
}

// UnknownKeys lists the keys of the file, with their full TOML path, that are inside the
// sections of this service but match no known key (typos, keys of a newer version). They
// are ignored, as the original does; callers may warn about them.
func (f *File) UnknownKeys() []string {
	return append([]string(nil), f.unknownKeys...)
}

// EnvName is the environment variable that overrides the key at the TOML path keys, e.g.
// ["hatchery", "vsphere", "iprange"] gives CDS_HATCHERY_VSPHERE_IPRANGE.
func EnvName(keys ...string) string {
	return EnvPrefix + strings.ToUpper(strings.Join(keys, "_"))
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		m[k] = v
	}
	return m
}

// decoder fills a struct from the key-folded map of the file, collecting every error.
type decoder struct {
	env     map[string]string
	errs    []error
	unknown []string
}

func keyOf(f reflect.StructField) string {
	return f.Tag.Get("mapstructure")
}

func pathString(path []string) string {
	return strings.Join(path, ".")
}

// lookup finds key in m ignoring case.
func lookup(m map[string]any, key string) (any, bool) {
	if m == nil {
		return nil, false
	}
	if v, ok := m[strings.ToLower(key)]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// decodeStruct fills v (a struct) from m. Absent keys take their default tag unless
// inArray (entries of arrays of tables have no defaults). Environment overrides apply to
// every key outside arrays of tables.
func (d *decoder) decodeStruct(v reflect.Value, m map[string]any, path []string, inArray bool) {
	t := v.Type()
	known := make(map[string]bool, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key := keyOf(sf)
		if key == "" || !sf.IsExported() {
			continue
		}
		known[strings.ToLower(key)] = true
		fv := v.Field(i)
		fpath := append(append([]string(nil), path...), key)
		raw, present := lookup(m, key)

		if sf.Type.Kind() == reflect.Struct {
			var sub map[string]any
			if present {
				var ok bool
				if sub, ok = raw.(map[string]any); !ok {
					d.errs = append(d.errs, fmt.Errorf("%s: expected a table, got %s", pathString(fpath), describe(raw)))
					continue
				}
			}
			d.decodeStruct(fv, sub, fpath, inArray)
			continue
		}

		switch {
		case present:
			if err := d.assign(fv, raw, fpath); err != nil {
				d.errs = append(d.errs, fmt.Errorf("%s: %w", pathString(fpath), err))
			}
		case !inArray:
			if def, ok := sf.Tag.Lookup("default"); ok {
				if err := assignString(fv, def); err != nil {
					// A wrong default tag is a programming error caught by the tests.
					panic(fmt.Sprintf("config: default of %s: %v", pathString(fpath), err))
				}
			}
		}

		if !inArray {
			d.applyEnv(fv, fpath)
		}
	}

	// The root and [hatchery] hold other services' sections: not typos.
	if len(path) == 0 || (len(path) == 1 && path[0] == "hatchery") {
		return
	}
	for k := range m {
		if !known[strings.ToLower(k)] {
			d.unknown = append(d.unknown, pathString(append(append([]string(nil), path...), k)))
		}
	}
}

func (d *decoder) applyEnv(fv reflect.Value, path []string) {
	name := EnvName(path...)
	val, ok := d.env[name]
	// As with the original (viper's AllowEmptyEnv off), an empty variable is no override.
	if !ok || val == "" {
		return
	}
	var err error
	switch {
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
		err = d.assignJSONTables(fv, val, path)
	case fv.Kind() == reflect.Slice:
		err = assignStringList(fv, val)
	default:
		err = assignString(fv, val)
	}
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("environment variable %s (%s): %w", name, pathString(path), err))
	}
}

// assignJSONTables decodes a JSON array of objects into an array-of-tables field, with the
// same case-insensitive keys and conversions as the file.
func (d *decoder) assignJSONTables(fv reflect.Value, val string, path []string) error {
	dec := json.NewDecoder(strings.NewReader(val))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("expected a JSON array of objects: %w", err)
	}
	sub := decoder{}
	if err := sub.assign(fv, raw, path); err != nil {
		return err
	}
	if len(sub.errs) > 0 {
		return errors.Join(sub.errs...)
	}
	return nil
}

// assign stores a value read from TOML (or JSON) into a non-struct field. Conversions are
// as lenient as the original's weakly typed decoding: "10" fills an int, 1 fills a bool.
func (d *decoder) assign(fv reflect.Value, raw any, path []string) error {
	switch fv.Kind() {
	case reflect.String:
		s, err := toString(raw)
		if err != nil {
			return err
		}
		fv.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := toInt(raw)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case reflect.Bool:
		b, err := toBool(raw)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Float64:
		x, err := toFloat(raw)
		if err != nil {
			return err
		}
		fv.SetFloat(x)
	case reflect.Slice:
		items, ok := raw.([]any)
		if !ok {
			if fv.Type().Elem().Kind() == reflect.Struct {
				if m, isMap := raw.(map[string]any); isMap {
					// A single [table] where an array of tables is expected.
					items = []any{m}
				} else {
					return fmt.Errorf("expected an array of tables, got %s", describe(raw))
				}
			} else {
				items = []any{raw}
			}
		}
		out := reflect.MakeSlice(fv.Type(), len(items), len(items))
		for i, item := range items {
			ipath := append([]string(nil), path...)
			ipath[len(ipath)-1] += "[" + strconv.Itoa(i) + "]"
			if fv.Type().Elem().Kind() == reflect.Struct {
				m, ok := item.(map[string]any)
				if !ok {
					return fmt.Errorf("entry %d: expected a table, got %s", i, describe(item))
				}
				d.decodeStruct(out.Index(i), m, ipath, true)
				continue
			}
			if err := d.assign(out.Index(i), item, ipath); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
		}
		fv.Set(out)
	default:
		return fmt.Errorf("unsupported field kind %s", fv.Kind())
	}
	return nil
}

// assignString stores a value given as text (default tag, environment variable).
func assignString(fv reflect.Value, s string) error {
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := toInt(s)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case reflect.Bool:
		b, err := toBool(s)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Float64:
		x, err := toFloat(s)
		if err != nil {
			return err
		}
		fv.SetFloat(x)
	case reflect.Slice:
		return assignStringList(fv, s)
	default:
		return fmt.Errorf("unsupported field kind %s", fv.Kind())
	}
	return nil
}

// assignStringList takes "a,b,c", or a JSON array of strings when the value starts with
// "[" (for entries that contain commas, e.g. injectEnvVars).
func assignStringList(fv reflect.Value, s string) error {
	if fv.Type().Elem().Kind() != reflect.String {
		return fmt.Errorf("unsupported list of %s", fv.Type().Elem().Kind())
	}
	var items []string
	if strings.HasPrefix(strings.TrimSpace(s), "[") {
		if err := json.Unmarshal([]byte(s), &items); err != nil {
			return fmt.Errorf("expected a JSON array of strings: %w", err)
		}
	} else {
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
	}
	fv.Set(reflect.ValueOf(items))
	return nil
}

func describe(raw any) string {
	switch raw.(type) {
	case map[string]any:
		return "a table"
	case []any:
		return "an array"
	case string:
		return fmt.Sprintf("string %q", raw)
	default:
		return fmt.Sprintf("%T %v", raw, raw)
	}
}

func toString(raw any) (string, error) {
	switch x := raw.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case int:
		return strconv.Itoa(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case json.Number:
		return x.String(), nil
	default:
		return "", fmt.Errorf("expected a string, got %s", describe(raw))
	}
}

func toInt(raw any) (int64, error) {
	switch x := raw.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, fmt.Errorf("expected an integer, got %v", x)
		}
		return int64(x), nil
	case json.Number:
		return toInt(x.String())
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("expected an integer, got %q", x)
		}
		return n, nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	default:
		return 0, fmt.Errorf("expected an integer, got %s", describe(raw))
	}
}

func toBool(raw any) (bool, error) {
	switch x := raw.(type) {
	case bool:
		return x, nil
	case int64:
		return x != 0, nil
	case int:
		return x != 0, nil
	case json.Number:
		return x.String() != "0", nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("expected a boolean, got %q", x)
		}
		return b, nil
	default:
		return false, fmt.Errorf("expected a boolean, got %s", describe(raw))
	}
}

func toFloat(raw any) (float64, error) {
	switch x := raw.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	case json.Number:
		return toFloat(x.String())
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("expected a number, got %q", x)
		}
		return f, nil
	default:
		return 0, fmt.Errorf("expected a number, got %s", describe(raw))
	}
}

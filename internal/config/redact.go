package config

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// RedactedValue replaces every non-empty secret in Redacted.
const RedactedValue = "**redacted**"

// Redacted returns a deep copy of f in which the secrets (vCenter and guest passwords, the
// CDS tokens, the RSA private key, graylog extra values) are replaced by RedactedValue
// when set, so it can be printed or logged.
func (f *File) Redacted() *File {
	c := f.clone()
	redact := func(s *string) {
		if *s != "" {
			*s = RedactedValue
		}
	}
	vs := &c.Hatchery.VSphere
	cc := &vs.CommonConfiguration
	redact(&vs.Password)
	redact(&cc.API.Token)
	redact(&cc.API.TokenV2)
	redact(&cc.RSAPrivateKey)
	redact(&cc.Provision.WorkerLogsOptions.Graylog.ExtraValue)
	redact(&c.Log.Graylog.ExtraValue)
	for i := range vs.GuestCredentials {
		redact(&vs.GuestCredentials[i].Password)
	}
	return c
}

// clone deep-copies f: every slice gets its own backing array.
func (f *File) clone() *File {
	c := *f
	v := reflect.ValueOf(&c).Elem()
	cloneSlices(v)
	c.unknownKeys = append([]string(nil), f.unknownKeys...)
	return &c
}

func cloneSlices(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				cloneSlices(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		cp := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(cp, v)
		for i := 0; i < cp.Len(); i++ {
			cloneSlices(cp.Index(i))
		}
		v.Set(cp)
	}
}

// RegistrationConfig is the `config` object sent to the CDS API at sign-in (protocol spec
// §3.6): the JSON of the [hatchery.vsphere] table, shaped by the json tags, which leave
// out every secret.
func (f *File) RegistrationConfig() ([]byte, error) {
	b, err := json.Marshal(f.Hatchery.VSphere)
	if err != nil {
		return nil, fmt.Errorf("marshal registration config: %w", err)
	}
	return b, nil
}

// RedactedJSON is the whole configuration, secrets redacted, as one line of JSON keyed
// by the TOML key names (unlike RegistrationConfig it includes the local-only keys), for
// a debug log line.
func (f *File) RedactedJSON() ([]byte, error) {
	b, err := json.Marshal(tree(reflect.ValueOf(*f.Redacted())))
	if err != nil {
		return nil, fmt.Errorf("marshal configuration: %w", err)
	}
	return b, nil
}

// tree turns a configuration value into maps keyed by TOML key names.
func tree(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Struct:
		m := make(map[string]any, v.NumField())
		for i := 0; i < v.NumField(); i++ {
			sf := v.Type().Field(i)
			if key := keyOf(sf); key != "" && sf.IsExported() {
				m[key] = tree(v.Field(i))
			}
		}
		return m
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Struct {
			return v.Interface()
		}
		items := make([]any, v.Len())
		for i := range items {
			items[i] = tree(v.Index(i))
		}
		return items
	default:
		return v.Interface()
	}
}

package vspherehatchery

import (
	"errors"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

func TestGuestCredentials(t *testing.T) {
	v1 := func(user, password string) *hatchery.WorkerStarterWorkerModel {
		return &hatchery.WorkerStarterWorkerModel{ModelV1: &cds.Model{
			Name: "mymodel", Group: cds.Group{Name: "grp"},
			ModelVirtualMachine: cds.ModelVirtualMachine{Image: "debian12", User: user, Password: password},
		}}
	}
	v2 := func(user, password string) *hatchery.WorkerStarterWorkerModel {
		m := v2Model()
		m.VSphereSpec.Username, m.VSphereSpec.Password = user, password
		return m
	}
	configured := []config.GuestCredential{
		{ModelPath: "grp/other", Username: "wrong", Password: "wrong"},
		{ModelPath: "grp/mymodel", Username: "cfg-v1", Password: "p1"},
		{ModelPath: "grp/mymodel", Username: "second", Password: "p2"},
		{ModelVMWare: "debian12", Username: "cfg-v2", Password: "p3"},
		{ModelVMWare: "ubuntu", Username: "half"},
	}
	tests := []struct {
		name     string
		creds    []config.GuestCredential
		model    *hatchery.WorkerStarterWorkerModel
		wantUser string
		wantErr  bool
	}{
		{"v1 from config, first match wins", configured, v1("model-user", "mp"), "cfg-v1", false},
		{"v2 from config by image", configured, v2("spec-user", "sp"), "cfg-v2", false},
		{"v1 falls back to the model's user (fix of Q13)", nil, v1("model-user", "mp"), "model-user", false},
		{"v2 falls back to the spec's user (fix of Q13)", nil, v2("spec-user", "sp"), "spec-user", false},
		{"incomplete config entry falls back to the model", configured, func() *hatchery.WorkerStarterWorkerModel {
			m := v2("spec-user", "sp")
			m.VSphereSpec.Image = "ubuntu"
			return m
		}(), "spec-user", false},
		{"v1 path does not match a v2 image", []config.GuestCredential{{ModelVMWare: "grp/mymodel", Username: "x", Password: "y"}}, v1("", ""), "", true},
		{"nothing anywhere", nil, v2("spec-user", ""), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.GuestCredentials = tc.creds
			f := newOrch(t, cfg, nil)
			got, err := f.o.credentialsFor(tc.model)
			if tc.wantErr {
				if !errors.Is(err, ErrNoGuestCredentials) {
					t.Fatalf("err = %v, want ErrNoGuestCredentials", err)
				}
				return
			}
			if err != nil || got.Username != tc.wantUser || got.Password == "" {
				t.Fatalf("credentials = %q (err %v), want user %q", got.Username, err, tc.wantUser)
			}
		})
	}
}

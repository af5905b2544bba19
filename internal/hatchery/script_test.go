package hatchery

import (
	"slices"
	"strings"
	"testing"
)

func TestAssembleScript(t *testing.T) {
	if got, want := AssembleScript("pre", "worker", "post", false), "pre\nworker 1>/tmp/worker.log 2>&1;\npost"; got != want {
		t.Errorf("job script = %q, want %q", got, want)
	}
	if got, want := AssembleScript("pre", "worker", "post", true), "pre\nworker register 1>/tmp/worker.register.log 2>&1\npost"; got != want {
		t.Errorf("register script = %q, want %q", got, want)
	}
}

func TestRenderScriptKeepsShellAndConfigIntact(t *testing.T) {
	// Standard base64 with "+" and "/" and padding: html/template would have turned "+"
	// into "&#43;" (quirk Q5).
	const cfg = "eyJuYW1lIjoidyJ9+/a=="
	script := "cat <<EOF > /etc/cds.env\nCONFIG={{.Config}}\nEOF\n" +
		"if [ 1 < 2 ]; then echo ok; fi\n" +
		"sed -e 's/a/b/' </tmp/in && echo \"done\" 2>&1\n" +
		"worker --api={{.API}} --from-image={{.FromWorkerImage}} --name='{{.Name}}' --ttl={{.TTL}}"
	got, err := RenderScript(script, NewScriptData("https://api.example/?a=1&b=2", cfg))
	if err != nil {
		t.Fatal(err)
	}
	want := "cat <<EOF > /etc/cds.env\nCONFIG=" + cfg + "\nEOF\n" +
		"if [ 1 < 2 ]; then echo ok; fi\n" +
		"sed -e 's/a/b/' </tmp/in && echo \"done\" 2>&1\n" +
		"worker --api=https://api.example/?a=1&b=2 --from-image=true --name='' --ttl=0"
	if got != want {
		t.Errorf("rendered\n%s\nwant\n%s", got, want)
	}
}

func TestRenderScriptOldFieldsRender(t *testing.T) {
	script := "{{.Token}}{{.Name}}{{.BaseDir}}{{.HTTPInsecure}}{{.Model}}{{.HatcheryName}}{{.WorkflowJobID}}" +
		"{{.TTL}}{{.GraylogHost}}{{.GraylogPort}}{{.GraylogExtraKey}}{{.GraylogExtraValue}}{{.WorkerBinary}}" +
		"{{range $k, $v := .InjectEnvVars}}{{$k}}{{end}}"
	got, err := RenderScript(script, NewScriptData("a", "c"))
	if err != nil {
		t.Fatal(err)
	}
	if got != "false000" {
		t.Errorf("rendered %q", got)
	}
}

func TestRenderScriptErrors(t *testing.T) {
	for name, script := range map[string]string{
		"unknown field": "echo {{.Hatchery}}",
		"parse error":   "echo {{.API",
	} {
		if _, err := RenderScript(script, NewScriptData("a", "c")); err == nil {
			t.Errorf("%s: rendering %q should fail", name, script)
		}
	}
}

func TestV2LaunchScript(t *testing.T) {
	pre, cmd, post := V2Commands(V1JobOnV2ModelOSArch)
	got, err := RenderScript(AssembleScript(pre, cmd, post, false), NewScriptData("https://api.example", "cfg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/bin/sh\n",
		`"https://api.example/download/worker/linux/$(uname -m)"`,
		"curl -L", "--retry 10 --retry-max-time 120", "wget ", "/usr/local/bin/worker", "/tmp/cds-worker-setup.log",
		"chmod +x /usr/local/bin/worker", "exit 1",
		"\nPATH=$PATH worker 1>/tmp/worker.log 2>&1;\nsudo shutdown -h now",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("v2 launch script lacks %q:\n%s", want, got)
		}
	}
	if !strings.HasPrefix(GuestArguments(got), "-n ;#!/bin/sh\n") || GuestProgram != "/bin/echo" {
		t.Errorf("guest command = %s %q", GuestProgram, GuestArguments(got)[:20])
	}
}

func TestGuestEnv(t *testing.T) {
	got := GuestEnv("YWJj+/==", map[string]string{"ZED": "1", "ALPHA": "a=b", "MID": ""})
	want := []string{"CDS_CONFIG=YWJj+/==", "ALPHA=a=b", "MID=", "ZED=1"}
	if !slices.Equal(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}
	if got := GuestEnv("x", nil); !slices.Equal(got, []string{"CDS_CONFIG=x"}) {
		t.Errorf("env = %q", got)
	}
}

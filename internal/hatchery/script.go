package hatchery

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
)

// Guest program of the worker launch (spec §17.4): the guest tools run "/bin/echo" with
// GuestArguments(script); the text after ";" runs as a shell script.
const (
	GuestProgram         = "/bin/echo"
	GuestArgumentsPrefix = "-n ;"
)

// Commands of a v2 model (spec §17.3); the pre-command is DownloadScriptV2.
const (
	V2WorkerCmd     = "PATH=$PATH worker"
	V2WorkerPostCmd = "sudo shutdown -h now"
)

// V1JobOnV2ModelOSArch is the os/arch downloaded for a v1 job running on a v2 model: the
// job does not say, so the guest asks its own machine type.
const V1JobOnV2ModelOSArch = "linux/$(uname -m)"

// GuestArguments is the argument string of GuestProgram for a rendered launch script.
func GuestArguments(script string) string { return GuestArgumentsPrefix + script }

// AssembleScript joins a model's pre-command, command and post-command into the launch
// script (spec §17.1); a registration worker runs "<cmd> register".
func AssembleScript(pre, cmd, post string, registerOnly bool) string {
	if registerOnly {
		return pre + "\n" + cmd + " register 1>/tmp/worker.register.log 2>&1" + "\n" + post
	}
	return pre + "\n" + cmd + " 1>/tmp/worker.log 2>&1;" + "\n" + post
}

// V2Commands returns the pre-command, command and post-command of a v2 model for the given
// os/arch (the model's osarch for a v2 job, V1JobOnV2ModelOSArch for a v1 job).
func V2Commands(osarch string) (pre, cmd, post string) {
	return DownloadScriptV2(osarch), V2WorkerCmd, V2WorkerPostCmd
}

// DownloadScriptV2 is the pre-command of a v2 model: it downloads the worker binary for
// osarch from the API ({{.API}} is filled by RenderScript) with curl, or wget, or fails.
func DownloadScriptV2(osarch string) string {
	url := `"{{.API}}/download/worker/` + osarch + `"`
	return `#!/bin/sh
if [ -n "$(which curl)" ]; then
  curl -L ` + url + ` -o /usr/local/bin/worker --retry 10 --retry-max-time 120 >>/tmp/cds-worker-setup.log 2>&1 && chmod +x /usr/local/bin/worker
elif [ -n "$(which wget)" ]; then
  wget ` + url + ` -O /usr/local/bin/worker >>/tmp/cds-worker-setup.log 2>&1 && chmod +x /usr/local/bin/worker
else
  echo "cannot download the CDS worker binary: neither curl nor wget is installed"
  exit 1
fi`
}

// ScriptData is the data of the launch-script template (spec §17.2). Only API, Config and
// FromWorkerImage carry values; the other fields exist so that old v1 model scripts that
// reference them still render, while a reference to any other field is a render error.
type ScriptData struct {
	API               string
	Config            string
	FromWorkerImage   bool
	Token             string
	Name              string
	BaseDir           string
	HTTPInsecure      bool
	Model             string
	HatcheryName      string
	WorkflowJobID     int64
	TTL               int
	GraylogHost       string
	GraylogPort       int
	GraylogExtraKey   string
	GraylogExtraValue string
	WorkerBinary      string
	InjectEnvVars     map[string]string
}

// NewScriptData returns the template data of a worker: its API endpoint and its base64
// configuration.
func NewScriptData(apiEndpoint, configB64 string) ScriptData {
	return ScriptData{API: apiEndpoint, Config: configB64, FromWorkerImage: true}
}

// RenderScript renders the launch script as plain text. The original rendered it as HTML
// (quirk Q5), which mangled {{.Config}} ("+" became "&#43;") and broke heredocs; as text,
// values and shell syntax come out intact.
func RenderScript(script string, data ScriptData) (string, error) {
	tmpl, err := template.New("launch-script").Option("missingkey=error").Parse(script)
	if err != nil {
		return "", fmt.Errorf("parse launch script: %w", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render launch script: %w", err)
	}
	return b.String(), nil
}

// GuestEnv is the environment of the guest process starting the worker: CDS_CONFIG first,
// then one KEY=VALUE per injected variable, sorted by key so that the list is stable.
func GuestEnv(configB64 string, inject map[string]string) []string {
	env := make([]string, 0, 1+len(inject))
	env = append(env, WorkerConfigEnv+"="+configB64)
	for _, k := range slices.Sorted(maps.Keys(inject)) {
		env = append(env, k+"="+inject[k])
	}
	return env
}

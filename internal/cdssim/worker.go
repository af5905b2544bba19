package cdssim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// WorkerConfig is the decoded CDS_CONFIG of a simulated worker (spec §16).
type WorkerConfig struct {
	Name                     string            `json:"name"`
	Basedir                  string            `json:"basedir"`
	Log                      map[string]any    `json:"log"`
	HatcheryName             string            `json:"hatchery_name"`
	APIEndpoint              string            `json:"api_endpoint"`
	APIEndpointInsecure      bool              `json:"api_endpoint_insecure,omitempty"`
	APIToken                 string            `json:"api_token"`
	CDNEndpoint              string            `json:"cdn_endpoint"`
	GelfServiceAddr          string            `json:"gelf_service_addr"`
	GelfServiceAddrEnableTLS bool              `json:"gelf_service_addr_enable_tls,omitempty"`
	Model                    string            `json:"model"`
	BookedJobID              int64             `json:"booked_job_id,omitempty"`
	RunJobID                 string            `json:"run_job_id,omitempty"`
	Region                   string            `json:"region,omitempty"`
	InjectEnvVars            map[string]string `json:"inject_env_vars,omitempty"`
}

// WorkerRun is the record of one simulated worker.
type WorkerRun struct {
	Name         string
	HatcheryName string
	RegisterOnly bool
	JobID        int64  // v1 job
	RunJobID     string // v2 run job
	ModelID      int64  // v1 model (0 for v2 models)
	Model        string // CDS_CONFIG model
	Config       WorkerConfig
	Started      time.Time
	Finished     bool
	// Err is why the worker was refused or stopped; nil for a worker that ran to the end.
	Err error
}

const configEnv = "CDS_CONFIG"

var (
	configKeysRequired = []string{"name", "basedir", "log", "hatchery_name", "api_endpoint", "api_token",
		"cdn_endpoint", "gelf_service_addr", "model"}
	configKeysOptional = []string{"api_endpoint_insecure", "gelf_service_addr_enable_tls", "booked_job_id",
		"run_job_id", "region", "inject_env_vars"}
	logKeys = []string{"Level", "Format", "TextFields", "SkipTextFields", "GraylogHost", "GraylogPort",
		"GraylogProtocol", "GraylogExtraKey", "GraylogExtraValue", "GraylogFieldCDSServiceType",
		"GraylogFieldCDSServiceName", "GraylogFieldCDSVersion", "GraylogFieldCDSOS", "GraylogFieldCDSArch",
		"SyslogHost", "SyslogPort", "SyslogProtocol", "SyslogExtraTag"}
	claimKeys    = []string{"iss", "sub", "jti", "iat", "exp", "Worker"}
	v1WorkerKeys = []string{"worker_model", "model", "register_only", "hatchery_name"} // + optional job_id
	v2WorkerKeys = []string{"worker_model", "model_name", "run_job_id", "hatchery_name"}
)

// workerJWTLifetime is what the spec fixes for exp - iat (§15); one second of slack covers a
// clock tick between the two readings.
const workerJWTLifetime = time.Hour

type workerClaimModel struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

type workerClaim struct {
	WorkerModel  string            `json:"worker_model"`
	Model        *workerClaimModel `json:"model"`
	JobID        int64             `json:"job_id"`
	RegisterOnly *bool             `json:"register_only"`
	HatcheryName string            `json:"hatchery_name"`
	ModelName    string            `json:"model_name"`
	RunJobID     string            `json:"run_job_id"`
}

type workerClaims struct {
	Worker workerClaim `json:"Worker"`
	jwt.RegisteredClaims
}

// checkKeys reports keys missing from required or outside required+optional.
func checkKeys(what string, got map[string]json.RawMessage, required, optional []string) error {
	var problems []string
	for _, k := range required {
		if _, ok := got[k]; !ok {
			problems = append(problems, "missing "+k)
		}
	}
	for k := range got {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) {
			problems = append(problems, "unexpected "+k)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%s: %s", what, strings.Join(problems, ", "))
	}
	return nil
}

func decodeWorkerConfig(env map[string]string) (WorkerConfig, error) {
	var cfg WorkerConfig
	b64, ok := env[configEnv]
	if !ok || b64 == "" {
		return cfg, fmt.Errorf("environment has no %s", configEnv)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return cfg, fmt.Errorf("%s is not standard base64: %w", configEnv, err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return cfg, fmt.Errorf("%s is not a JSON object: %w", configEnv, err)
	}
	if err := checkKeys(configEnv, keys, configKeysRequired, configKeysOptional); err != nil {
		return cfg, err
	}
	var logObj map[string]json.RawMessage
	if err := json.Unmarshal(keys["log"], &logObj); err != nil {
		return cfg, fmt.Errorf("%s log is not an object: %w", configEnv, err)
	}
	if err := checkKeys(configEnv+" log", logObj, logKeys, nil); err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("decode %s: %w", configEnv, err)
	}
	if cfg.Name == "" || cfg.APIToken == "" || cfg.HatcheryName == "" {
		return cfg, fmt.Errorf("%s: name, api_token and hatchery_name must be set", configEnv)
	}
	return cfg, nil
}

// verifyWorkerJWT checks signature (RS512, key registered by the named hatchery), times and the
// exact claim layout of spec §15.
func (s *Server) verifyWorkerJWT(tok string) (workerClaims, bool, error) {
	var claims workerClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return claims, false, errors.New("worker JWT is not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return claims, false, fmt.Errorf("worker JWT payload: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		return claims, false, fmt.Errorf("worker JWT payload: %w", err)
	}
	if err := checkKeys("worker JWT claims", top, claimKeys, nil); err != nil {
		return claims, false, err
	}
	var wk map[string]json.RawMessage
	if err := json.Unmarshal(top["Worker"], &wk); err != nil {
		return claims, false, fmt.Errorf("worker JWT Worker claim: %w", err)
	}
	_, isV2 := wk["run_job_id"]
	if isV2 {
		err = checkKeys("worker JWT Worker (v2)", wk, v2WorkerKeys, nil)
	} else {
		err = checkKeys("worker JWT Worker (v1)", wk, v1WorkerKeys, []string{"job_id"})
		if err == nil {
			var model map[string]json.RawMessage
			if err = json.Unmarshal(wk["model"], &model); err == nil {
				err = checkKeys("worker JWT Worker.model", model, nil, []string{"id", "name"})
			}
		}
	}
	if err != nil {
		return claims, false, err
	}

	token, err := jwt.ParseWithClaims(tok, &claims, func(t *jwt.Token) (any, error) {
		c := t.Claims.(*workerClaims)
		name := c.Worker.HatcheryName
		s.mu.Lock()
		var pemKey []byte
		if isV2 {
			if h := s.hatcheries[name]; h != nil {
				pemKey = h.PublicKeyPEM
			}
		} else if svc := s.services[name]; svc != nil {
			pemKey = svc.PublicKeyPEM
		}
		s.mu.Unlock()
		if pemKey == nil {
			return nil, fmt.Errorf("no public key registered for hatchery %q", name)
		}
		return parseRSAPublicKeyPEM(pemKey)
	}, jwt.WithValidMethods([]string{"RS512"}), jwt.WithTimeFunc(s.now), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		return claims, false, fmt.Errorf("verify worker JWT: %w", err)
	}
	if typ, _ := token.Header["typ"].(string); typ != "JWT" {
		return claims, false, fmt.Errorf("worker JWT header typ %q, want JWT", typ)
	}
	if claims.IssuedAt == nil {
		return claims, false, errors.New("worker JWT has no iat")
	}
	if life := claims.ExpiresAt.Sub(claims.IssuedAt.Time); life < workerJWTLifetime-time.Second || life > workerJWTLifetime+time.Second {
		return claims, false, fmt.Errorf("worker JWT lifetime %s, want %s", life, workerJWTLifetime)
	}
	w := claims.Worker
	switch {
	case !isV2 && (w.Model == nil || w.RegisterOnly == nil):
		return claims, false, errors.New("worker JWT Worker.model and Worker.register_only must not be null")
	case claims.ID == "":
		return claims, false, errors.New("worker JWT has an empty jti")
	case w.WorkerModel == "":
		return claims, false, errors.New("worker JWT Worker.worker_model is empty")
	case claims.Subject != w.WorkerModel:
		return claims, false, fmt.Errorf("worker JWT sub %q differs from Worker.worker_model %q", claims.Subject, w.WorkerModel)
	case claims.Issuer != w.HatcheryName:
		return claims, false, fmt.Errorf("worker JWT iss %q differs from Worker.hatchery_name %q", claims.Issuer, w.HatcheryName)
	}
	return claims, isV2, nil
}

// RunWorker plays a CDS worker started with env (what reached the VM): it decodes CDS_CONFIG,
// verifies the worker JWT and signs in as the real API would, registers, runs the job
// (Options.JobDuration / HoldJobs), marks it Success, disappears and calls OnWorkerDone with
// the worker name. A refused worker is recorded (WorkerRuns) and its error returned.
func (s *Server) RunWorker(ctx context.Context, env map[string]string) error {
	run, err := s.startWorker(env)
	if err != nil {
		return err
	}
	return s.finishWorker(ctx, run)
}

// StartWorker does the checks and sign-in of RunWorker synchronously, then lets the worker
// run its job in a goroutine owned by the server (ended by Close).
func (s *Server) StartWorker(env map[string]string) error {
	run, err := s.startWorker(env)
	if err != nil {
		return err
	}
	if !s.goOwned(func() { _ = s.finishWorker(s.ctx, run) }) {
		return s.failRun(run, errors.New("simulator closed"))
	}
	return nil
}

// CompleteWorker lets a worker held by Options.HoldJobs finish its job; false if no such
// worker is waiting.
func (s *Server) CompleteWorker(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.held[name]
	if ok {
		close(ch)
		delete(s.held, name)
	}
	return ok
}

// SetOnWorkerDone replaces Options.OnWorkerDone (e.g. once the vSphere side exists).
func (s *Server) SetOnWorkerDone(f func(vmName string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onWorkerDone = f
}

// WorkerRuns returns every simulated worker, accepted or refused, in start order.
func (s *Server) WorkerRuns() []WorkerRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WorkerRun, 0, len(s.runs))
	for _, r := range s.runs {
		out = append(out, *r)
	}
	return out
}

func (s *Server) failRun(run *WorkerRun, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	run.Err = err
	s.notifyLocked()
	return err
}

func (s *Server) startWorker(env map[string]string) (*WorkerRun, error) {
	run := &WorkerRun{Started: s.now()}
	cfg, err := decodeWorkerConfig(env)
	run.Name, run.HatcheryName, run.Model, run.Config = cfg.Name, cfg.HatcheryName, cfg.Model, cfg
	var claims workerClaims
	isV2 := false
	if err != nil {
		err = fmt.Errorf("worker config: %w", err)
	} else if claims, isV2, err = s.verifyWorkerJWT(cfg.APIToken); err != nil {
		err = fmt.Errorf("worker %q sign-in: %w", cfg.Name, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs = append(s.runs, run)
	defer s.notifyLocked()
	if err == nil {
		if isV2 {
			err = s.signinV2WorkerLocked(run, cfg, claims)
		} else {
			err = s.signinV1WorkerLocked(run, cfg, claims)
		}
		if err != nil {
			err = fmt.Errorf("worker %q sign-in: %w", cfg.Name, err)
		}
	}
	if err != nil {
		run.Err = err
		return nil, err
	}
	if s.opts.HoldJobs && !run.RegisterOnly {
		s.held[run.Name] = make(chan struct{})
	}
	return run, nil
}

// signinV1WorkerLocked applies the API's v1 worker sign-in rules (spec §13.2, §15) and
// registers the worker.
func (s *Server) signinV1WorkerLocked(run *WorkerRun, cfg WorkerConfig, claims workerClaims) error {
	w := claims.Worker
	if w.WorkerModel != cfg.Name || w.HatcheryName != cfg.HatcheryName {
		return fmt.Errorf("JWT worker %q of %q does not match CDS_CONFIG name %q / hatchery_name %q",
			w.WorkerModel, w.HatcheryName, cfg.Name, cfg.HatcheryName)
	}
	run.RegisterOnly = *w.RegisterOnly
	now := s.now()
	var model *modelState
	if w.Model.ID != 0 {
		model = s.models[w.Model.ID]
		if model == nil {
			return fmt.Errorf("model %d not found", w.Model.ID)
		}
		if model.model.Name != w.Model.Name {
			return fmt.Errorf("JWT model name %q, model %d is %q", w.Model.Name, w.Model.ID, model.model.Name)
		}
		if cfg.Model != model.model.Path() {
			return fmt.Errorf("CDS_CONFIG model %q, want %q", cfg.Model, model.model.Path())
		}
		run.ModelID = w.Model.ID
	}
	if run.RegisterOnly {
		if w.JobID != 0 || cfg.BookedJobID != 0 {
			return errors.New("a register-only worker must not carry a job id")
		}
		if model == nil {
			return errors.New("a register-only worker needs model information")
		}
		model.expireBookingLocked(now)
		if model.bookedBy != w.HatcheryName {
			return fmt.Errorf("model %s is not booked by %q (booked by %q)", model.model.Path(), w.HatcheryName, model.bookedBy)
		}
	} else {
		if w.JobID == 0 {
			return errors.New("Worker.job_id is required unless register_only")
		}
		if cfg.BookedJobID != w.JobID {
			return fmt.Errorf("CDS_CONFIG booked_job_id %d, JWT job_id %d", cfg.BookedJobID, w.JobID)
		}
		job := s.v1Jobs[w.JobID]
		if job == nil {
			return fmt.Errorf("job %d not found", w.JobID)
		}
		job.expireBookingLocked(now)
		if job.status != StatusWaiting || job.bookedBy != w.HatcheryName {
			return fmt.Errorf("job %d is %s and booked by %q, not by %q", w.JobID, job.status, job.bookedBy, w.HatcheryName)
		}
		if model != nil && len(job.job.ExecGroups) > 0 && model.model.Group.Name != "shared.infra" &&
			!slices.ContainsFunc(job.job.ExecGroups, func(g Group) bool { return g.ID == model.model.Group.ID }) {
			return fmt.Errorf("model group %q is not an exec group of job %d", model.model.Group.Name, w.JobID)
		}
		if model == nil && cfg.Model == "" {
			return errors.New("CDS_CONFIG model is empty")
		}
		run.JobID = w.JobID
	}
	wk := &V1Worker{
		ID: newUUID(), Name: cfg.Name, LastBeat: now, Status: StatusWaiting, HatcheryName: w.HatcheryName,
		Uptodate: true, Version: s.opts.APIVersion, OS: "linux", Arch: "amd64",
	}
	if svc := s.services[w.HatcheryName]; svc != nil {
		id := svc.ID
		wk.HatcheryID = &id
	}
	if model != nil {
		id, name := model.model.ID, model.model.Name
		wk.ModelID, wk.ModelName = &id, &name
	}
	s.v1Workers = append(s.v1Workers, wk)
	return nil
}

// signinV2WorkerLocked applies the API's v2 rules: the run job must be Scheduling, taken by
// this hatchery, in the requested region.
func (s *Server) signinV2WorkerLocked(run *WorkerRun, cfg WorkerConfig, claims workerClaims) error {
	w := claims.Worker
	if w.WorkerModel != cfg.Name || w.HatcheryName != cfg.HatcheryName {
		return fmt.Errorf("JWT worker %q of %q does not match CDS_CONFIG name %q / hatchery_name %q",
			w.WorkerModel, w.HatcheryName, cfg.Name, cfg.HatcheryName)
	}
	if cfg.RunJobID != w.RunJobID {
		return fmt.Errorf("CDS_CONFIG run_job_id %q, JWT run_job_id %q", cfg.RunJobID, w.RunJobID)
	}
	if cfg.BookedJobID != 0 {
		return errors.New("CDS_CONFIG of a v2 worker carries booked_job_id")
	}
	job := s.v2Jobs[w.RunJobID]
	switch {
	case job == nil:
		return fmt.Errorf("run job %q not found", w.RunJobID)
	case job.job.Region != cfg.Region:
		return fmt.Errorf("run job %q is in region %q, worker asks for %q", w.RunJobID, job.job.Region, cfg.Region)
	case job.job.Status != StatusScheduling || job.job.HatcheryName != w.HatcheryName:
		return fmt.Errorf("run job %q is %s and taken by %q, not by %q", w.RunJobID, job.job.Status, job.job.HatcheryName, w.HatcheryName)
	case w.ModelName != job.model.Name || cfg.Model != job.model.Name:
		return fmt.Errorf("model %q (JWT) / %q (CDS_CONFIG), run job model is %q", w.ModelName, cfg.Model, job.model.Name)
	}
	run.RunJobID = w.RunJobID
	s.v2Workers = append(s.v2Workers, &V2Worker{
		ID: newUUID(), Name: cfg.Name, LastBeat: s.now(), ModelName: w.ModelName, RunJobID: w.RunJobID,
		Status: StatusWaiting, HatcheryName: w.HatcheryName, Version: s.opts.APIVersion, OS: "linux", Arch: "amd64",
	})
	if h := s.hatcheries[w.HatcheryName]; h != nil {
		s.v2Workers[len(s.v2Workers)-1].HatcheryID = h.ID
	}
	return nil
}

func (s *Server) setWorkerStatusLocked(name, status string, jobID int64) {
	for _, wk := range s.v1Workers {
		if wk.Name == name {
			wk.Status = status
			if jobID != 0 {
				id := jobID
				wk.JobRunID = &id
			}
		}
	}
	for _, wk := range s.v2Workers {
		if wk.Name == name {
			wk.Status = status
		}
	}
}

// finishWorker takes the job, waits for its simulated duration and completes it.
func (s *Server) finishWorker(ctx context.Context, run *WorkerRun) error {
	s.mu.Lock()
	if !run.RegisterOnly {
		if err := s.takeJobLocked(run); err != nil {
			s.removeWorkerLocked(run.Name)
			run.Err = err
			s.notifyLocked()
			s.mu.Unlock()
			return err
		}
	}
	hold := s.held[run.Name]
	s.notifyLocked()
	s.mu.Unlock()

	var wait <-chan time.Time
	switch {
	case hold != nil:
	case run.RegisterOnly || s.opts.JobDuration <= 0:
		c := make(chan time.Time, 1)
		c <- time.Time{}
		wait = c
	default:
		wait = s.opts.After(s.opts.JobDuration)
	}
	select {
	case <-hold:
	case <-wait:
	case <-ctx.Done():
		return s.abortRun(run, ctx.Err())
	case <-s.ctx.Done():
		return s.abortRun(run, errors.New("simulator closed"))
	}

	s.mu.Lock()
	now := s.now()
	switch {
	case run.RegisterOnly:
		if m := s.models[run.ModelID]; m != nil {
			osName, arch := "linux", "amd64"
			m.model.NeedRegistration = false
			m.model.CheckRegistration = false
			m.model.RegisteredCapabilities = slices.Clone(s.opts.RegisteredCapabilities)
			m.model.RegisteredOS, m.model.RegisteredArch = &osName, &arch
			m.model.LastRegistration = now
			m.model.NbSpawnErr = 0
			m.model.LastSpawnErr = nil
			m.bookedBy = ""
		}
	case run.JobID != 0:
		if j := s.v1Jobs[run.JobID]; j != nil {
			j.status, j.done = StatusSuccess, now
		}
	case run.RunJobID != "":
		if j := s.v2Jobs[run.RunJobID]; j != nil {
			j.job.Status = StatusSuccess
		}
	}
	s.removeWorkerLocked(run.Name)
	run.Finished = true
	done := s.onWorkerDone
	s.notifyLocked()
	s.mu.Unlock()
	if done != nil {
		done(run.Name)
	}
	return nil
}

func (s *Server) takeJobLocked(run *WorkerRun) error {
	if run.JobID != 0 {
		j := s.v1Jobs[run.JobID]
		if j == nil || j.status != StatusWaiting {
			return fmt.Errorf("worker %q cannot take job %d: no longer waiting", run.Name, run.JobID)
		}
		j.status, j.start = StatusBuilding, s.now()
		s.setWorkerStatusLocked(run.Name, StatusBuilding, run.JobID)
		return nil
	}
	j := s.v2Jobs[run.RunJobID]
	if j == nil || j.job.Status != StatusScheduling {
		return fmt.Errorf("worker %q cannot take run job %q: not scheduling", run.Name, run.RunJobID)
	}
	j.job.Status = StatusBuilding
	s.setWorkerStatusLocked(run.Name, StatusBuilding, 0)
	return nil
}

func (s *Server) abortRun(run *WorkerRun, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, run.Name)
	s.removeWorkerLocked(run.Name)
	run.Err = fmt.Errorf("worker %q interrupted: %w", run.Name, cause)
	s.notifyLocked()
	return run.Err
}

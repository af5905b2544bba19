package cdssim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// modelBookTTL bounds a registration booking of a v1 model; a register-only worker or a
// reported spawn error releases it earlier.
const modelBookTTL = 10 * time.Minute

type modelState struct {
	model       V1Model
	secrets     []ModelSecret
	bookedBy    string
	bookedUntil time.Time
	bookCount   int
	errors      []ModelSpawnError
}

// V1ModelState is a snapshot of a v1 worker model as the simulator sees it.
type V1ModelState struct {
	Model     V1Model
	BookedBy  string
	BookCount int
	Errors    []ModelSpawnError
}

func cloneModel(m V1Model) V1Model {
	m.RegisteredCapabilities = slices.Clone(m.RegisteredCapabilities)
	if m.Group != nil {
		g := *m.Group
		m.Group = &g
	}
	return m
}

// AddV1Model stores a v1 worker model and returns its ID (m.ID when non-zero). A nil Group
// defaults to shared.infra; Type defaults to vsphere.
func (s *Server) AddV1Model(m V1Model) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.ID == 0 {
		s.nextModelID++
		for s.models[s.nextModelID] != nil {
			s.nextModelID++
		}
		m.ID = s.nextModelID
	}
	if m.Group == nil {
		m.Group = &Group{ID: 1, Name: "shared.infra"}
	}
	if m.GroupID == 0 {
		m.GroupID = m.Group.ID
	}
	if m.Type == "" {
		m.Type = "vsphere"
	}
	if s.models[m.ID] == nil {
		s.modelOrder = append(s.modelOrder, m.ID)
	}
	s.models[m.ID] = &modelState{model: cloneModel(m)}
	s.notifyLocked()
	return m.ID
}

// AddV1ModelSecret adds a secret to the model with that ID.
func (s *Server) AddV1ModelSecret(modelID int64, name, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[modelID]
	if !ok {
		return fmt.Errorf("add secret %q: model %d not found", name, modelID)
	}
	m.secrets = append(m.secrets, ModelSecret{ID: newUUID(), Created: s.now(), WorkerModelID: modelID, Name: name, Value: value})
	return nil
}

// V1Model returns a snapshot of a v1 model.
func (s *Server) V1Model(id int64) (V1ModelState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[id]
	if !ok {
		return V1ModelState{}, false
	}
	m.expireBookingLocked(s.now())
	return V1ModelState{Model: cloneModel(m.model), BookedBy: m.bookedBy, BookCount: m.bookCount, Errors: slices.Clone(m.errors)}, true
}

// AddAsCodeModel makes a v2 model answer endpoint #29 for that project, VCS, repository
// (unescaped, may contain "/"), branch and model name.
func (s *Server) AddAsCodeModel(projKey, vcs, repo, branch string, m V2WorkerModel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asCode[asCodeKey(projKey, vcs, repo, branch, m.Name)] = m
}

func asCodeKey(projKey, vcs, repo, branch, name string) string {
	return projKey + "\x00" + vcs + "\x00" + repo + "\x00" + branch + "\x00" + name
}

func (m *modelState) expireBookingLocked(now time.Time) {
	if m.bookedBy != "" && !now.Before(m.bookedUntil) {
		m.bookedBy = ""
	}
}

func (s *Server) modelFromPath(w http.ResponseWriter, r *http.Request) (*modelState, bool) {
	group, name := r.PathValue("group"), r.PathValue("name")
	for _, id := range s.modelOrder {
		m := s.models[id]
		if m.model.Name == name && m.model.Group != nil && m.model.Group.Name == group {
			return m, true
		}
	}
	writeErr(w, errModelNotFound, group+"/"+name)
	return nil, false
}

func (s *Server) handleModelsEnabled(w http.ResponseWriter, _ *http.Request, _ *session) {
	s.mu.Lock()
	out := []V1Model{}
	for _, id := range s.modelOrder {
		if m := s.models[id]; !m.model.Disabled {
			out = append(out, cloneModel(m.model))
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleModelGet(w http.ResponseWriter, r *http.Request, _ *session) {
	s.mu.Lock()
	m, ok := s.modelFromPath(w, r)
	if !ok {
		s.mu.Unlock()
		return
	}
	out := cloneModel(m.model)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleModelSecrets(w http.ResponseWriter, r *http.Request, _ *session) {
	s.mu.Lock()
	m, ok := s.modelFromPath(w, r)
	if !ok {
		s.mu.Unlock()
		return
	}
	out := append([]ModelSecret{}, m.secrets...)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleModelBook(w http.ResponseWriter, r *http.Request, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.modelFromPath(w, r)
	if !ok {
		return
	}
	now := s.now()
	m.expireBookingLocked(now)
	if m.bookedBy != "" {
		writeErr(w, errModelBooked, fmt.Sprintf("booked by %q", m.bookedBy))
		return
	}
	m.bookedBy = sess.name
	m.bookedUntil = now.Add(modelBookTTL)
	m.bookCount++
	s.notifyLocked()
	writeNoContent(w)
}

func (s *Server) handleModelError(w http.ResponseWriter, r *http.Request, _ *session) {
	body, _ := io.ReadAll(r.Body)
	var raw map[string]json.RawMessage
	var form struct {
		Error string `json:"Error"`
		Logs  []byte `json:"Logs"`
	}
	if !decodeBytes(w, body, &raw) || !decodeBytes(w, body, &form) {
		return
	}
	// Go's decoder matches keys case-insensitively; the wire key is exactly "Error" (Q20).
	if _, ok := raw["Error"]; !ok {
		writeErr(w, errWrongRequest, `spawn error form without "Error" key`)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.modelFromPath(w, r)
	if !ok {
		return
	}
	now := s.now()
	m.errors = append(m.errors, ModelSpawnError{ModelPath: m.model.Path(), Error: form.Error, Logs: form.Logs, Time: now})
	m.model.NbSpawnErr++
	msg := form.Error
	m.model.LastSpawnErr = &msg
	m.bookedBy = ""
	s.notifyLocked()
	writeNoContent(w)
}

func (s *Server) handleAsCodeModel(w http.ResponseWriter, r *http.Request, _ *session) {
	key := asCodeKey(r.PathValue("proj"), r.PathValue("vcs"), r.PathValue("repo"), r.URL.Query().Get("branch"), r.PathValue("model"))
	s.mu.Lock()
	m, ok := s.asCode[key]
	s.mu.Unlock()
	if !ok {
		writeErr(w, errModelNotFound, r.URL.EscapedPath())
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// ---- workers ----

// AddV1Worker makes a v1 worker appear in GET /worker (e.g. one the hatchery never started).
// ID defaults to a UUID, Status to Waiting, HatcheryName to Options.HatcheryName.
func (s *Server) AddV1Worker(wk V1Worker) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workerDefaultsLocked(&wk.ID, &wk.Status, &wk.HatcheryName, &wk.LastBeat)
	s.v1Workers = append(s.v1Workers, &wk)
	s.notifyLocked()
	return wk.ID
}

// AddV2Worker makes a v2 worker appear in GET /v2/worker.
func (s *Server) AddV2Worker(wk V2Worker) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workerDefaultsLocked(&wk.ID, &wk.Status, &wk.HatcheryName, &wk.LastBeat)
	s.v2Workers = append(s.v2Workers, &wk)
	s.notifyLocked()
	return wk.ID
}

// workerDefaultsLocked fills what a test left empty in a worker it adds: a fresh ID, status
// Waiting, this server's hatchery, a heartbeat now.
func (s *Server) workerDefaultsLocked(id, status, hatchery *string, lastBeat *time.Time) {
	if *id == "" {
		*id = newUUID()
	}
	if *status == "" {
		*status = StatusWaiting
	}
	if *hatchery == "" {
		*hatchery = s.opts.HatcheryName
	}
	if lastBeat.IsZero() {
		*lastBeat = s.now()
	}
}

// DisableWorker sets the v1 or v2 worker with that name to Disabled; false if none.
func (s *Server) DisableWorker(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	found := false
	for _, wk := range s.v1Workers {
		if wk.Name == name {
			wk.Status, found = StatusDisabled, true
		}
	}
	for _, wk := range s.v2Workers {
		if wk.Name == name {
			wk.Status, found = StatusDisabled, true
		}
	}
	s.notifyLocked()
	return found
}

// V1Workers returns every v1 worker known to the simulator.
func (s *Server) V1Workers() []V1Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []V1Worker{}
	for _, wk := range s.v1Workers {
		out = append(out, *wk)
	}
	return out
}

// V2Workers returns every v2 worker known to the simulator.
func (s *Server) V2Workers() []V2Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []V2Worker{}
	for _, wk := range s.v2Workers {
		out = append(out, *wk)
	}
	return out
}

func (s *Server) removeWorkerLocked(name string) {
	s.v1Workers = slices.DeleteFunc(s.v1Workers, func(wk *V1Worker) bool { return wk.Name == name })
	s.v2Workers = slices.DeleteFunc(s.v2Workers, func(wk *V2Worker) bool { return wk.Name == name })
}

// handleV1Workers lists the workers of the calling hatchery, as the API does for a hatchery
// service consumer.
func (s *Server) handleV1Workers(w http.ResponseWriter, _ *http.Request, sess *session) {
	s.mu.Lock()
	out := []V1Worker{}
	for _, wk := range s.v1Workers {
		if wk.HatcheryName == sess.name {
			out = append(out, *wk)
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV1WorkerDisable(w http.ResponseWriter, r *http.Request, _ *session) {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, wk := range s.v1Workers {
		if wk.ID == id {
			wk.Status = StatusDisabled
			s.notifyLocked()
			writeNoContent(w)
			return
		}
	}
	writeErr(w, errNotFound, "worker "+id)
}

func (s *Server) handleV2Workers(w http.ResponseWriter, _ *http.Request, sess *session) {
	s.mu.Lock()
	out := []V2Worker{}
	for _, wk := range s.v2Workers {
		if wk.HatcheryName == sess.name {
			out = append(out, *wk)
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

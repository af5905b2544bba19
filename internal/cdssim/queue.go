package cdssim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Job statuses (spec §22.3).
const (
	StatusWaiting    = "Waiting"
	StatusScheduling = "Scheduling"
	StatusBuilding   = "Building"
	StatusSuccess    = "Success"
	StatusFail       = "Fail"
	StatusDisabled   = "Disabled"
)

// defaultBookDelay is what the API applies to {"delay":0}.
const defaultBookDelay = 120 * time.Second

type v1JobState struct {
	job         V1Job
	status      string
	bookedBy    string
	bookedByID  int64
	bookedUntil time.Time
	bookCount   int
	start, done time.Time
	spawnInfos  []SpawnInfo
	results     []V1JobResult
}

// expireBookingLocked drops a booking whose delay has passed, as the API does.
func (j *v1JobState) expireBookingLocked(now time.Time) {
	if j.bookedBy != "" && !now.Before(j.bookedUntil) {
		j.bookedBy, j.bookedByID = "", 0
	}
}

func (j *v1JobState) wire() wireV1Job {
	var region *string
	if j.job.Region != "" {
		r := j.job.Region
		region = &r
	}
	return wireV1Job{
		ID:                j.job.ID,
		ProjectID:         j.job.ProjectID,
		WorkflowNodeRunID: j.job.WorkflowNodeRunID,
		Job:               wireExecutedJob{Action: wireAction{Name: j.job.JobName, Requirements: slices.Clone(j.job.Requirements)}},
		Status:            j.status,
		Queued:            j.job.Queued,
		Start:             j.start,
		Done:              j.done,
		BookedBy:          wireBookedBy{Name: j.bookedBy, ID: j.bookedByID},
		ExecGroups:        slices.Clone(j.job.ExecGroups),
		Region:            region,
		ModelType:         j.job.ModelType,
		Header:            j.job.Header,
		SpawnInfos:        slices.Clone(j.spawnInfos),
	}
}

// V1JobState is a snapshot of a v1 job as the simulator sees it.
type V1JobState struct {
	Job        V1Job
	Status     string
	BookedBy   string
	BookCount  int
	SpawnInfos []SpawnInfo
	Results    []V1JobResult
}

type v2JobState struct {
	job       V2RunJob
	model     V2WorkerModel
	takeCount int
	infos     []V2JobInfo
}

// V2JobState is a snapshot of a v2 run job as the simulator sees it.
type V2JobState struct {
	Job       V2RunJob
	Model     V2WorkerModel
	TakeCount int
	Infos     []V2JobInfo
}

// AddV1Job queues a v1 job in status Waiting and pushes its websocket event; it returns the
// job ID (job.ID when non-zero, else a fresh one).
func (s *Server) AddV1Job(job V1Job) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if job.ID == 0 {
		s.nextV1JobID++
		for s.v1Jobs[s.nextV1JobID] != nil {
			s.nextV1JobID++
		}
		job.ID = s.nextV1JobID
	}
	if job.Queued.IsZero() {
		job.Queued = s.now()
	}
	job.Requirements = slices.Clone(job.Requirements)
	job.ExecGroups = slices.Clone(job.ExecGroups)
	j := &v1JobState{job: job, status: StatusWaiting}
	if s.v1Jobs[job.ID] == nil {
		s.v1Order = append(s.v1Order, job.ID)
	}
	s.v1Jobs[job.ID] = j
	s.broadcastV1Locked(j)
	s.notifyLocked()
	return job.ID
}

// AddV2Job queues a v2 run job whose runs-on resolves to model; it returns the run-job UUID.
// Defaults: status Waiting, region Options.Region, model type/osarch from the model,
// runs-on = model name.
func (s *Server) AddV2Job(job V2RunJob, model V2WorkerModel) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if job.ID == "" {
		job.ID = newUUID()
	}
	if job.Status == "" {
		job.Status = StatusWaiting
	}
	if job.Region == "" {
		job.Region = s.opts.Region
	}
	if job.ModelType == "" {
		job.ModelType = model.Type
	}
	if job.ModelOSArch == "" {
		job.ModelOSArch = model.OSArch
	}
	if job.Job.RunsOn == nil {
		job.Job.RunsOn = model.Name
	}
	if job.Queued.IsZero() {
		job.Queued = s.now()
	}
	if s.v2Jobs[job.ID] == nil {
		s.v2Order = append(s.v2Order, job.ID)
	}
	j := &v2JobState{job: job, model: model}
	s.v2Jobs[job.ID] = j
	if job.Status == StatusWaiting {
		s.broadcastV2Locked(j)
	}
	s.notifyLocked()
	return job.ID
}

// V1Job returns a snapshot of a v1 job.
func (s *Server) V1Job(id int64) (V1JobState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v1Jobs[id]
	if !ok {
		return V1JobState{}, false
	}
	j.expireBookingLocked(s.now())
	return V1JobState{
		Job: j.job, Status: j.status, BookedBy: j.bookedBy, BookCount: j.bookCount,
		SpawnInfos: slices.Clone(j.spawnInfos), Results: slices.Clone(j.results),
	}, true
}

// V1JobStatus returns the status of a v1 job ("" when unknown).
func (s *Server) V1JobStatus(id int64) string {
	st, _ := s.V1Job(id)
	return st.Status
}

// V2Job returns a snapshot of a v2 run job.
func (s *Server) V2Job(id string) (V2JobState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v2Jobs[id]
	if !ok {
		return V2JobState{}, false
	}
	return V2JobState{Job: j.job, Model: j.model, TakeCount: j.takeCount, Infos: slices.Clone(j.infos)}, true
}

// V2JobStatus returns the status of a v2 run job ("" when unknown).
func (s *Server) V2JobStatus(id string) string {
	st, _ := s.V2Job(id)
	return st.Job.Status
}

// V1JobCounts counts v1 jobs by status.
func (s *Server) V1JobCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, j := range s.v1Jobs {
		out[j.status]++
	}
	return out
}

// V2JobCounts counts v2 run jobs by status.
func (s *Server) V2JobCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, j := range s.v2Jobs {
		out[j.job.Status]++
	}
	return out
}

// Heartbeats returns the heartbeats received, in order.
func (s *Server) Heartbeats() []Heartbeat {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.heartbeats)
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request, sess *session) {
	var st MonitoringStatus
	if !decodeBody(w, r, &st) {
		return
	}
	s.mu.Lock()
	s.heartbeats = append(s.heartbeats, Heartbeat{V2: sess.kind == consumerHatchery, Name: sess.name, Status: st, Time: s.now()})
	s.notifyLocked()
	s.mu.Unlock()
	// Spec §4.1: 200 with an empty body.
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleCDN(w http.ResponseWriter, _ *http.Request, _ *session) {
	writeJSON(w, http.StatusOK, s.opts.CDN)
}

// ---- v1 queue ----

func (s *Server) v1JobFromPath(w http.ResponseWriter, r *http.Request) (*v1JobState, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeErr(w, errWrongRequest, "invalid job id")
		return nil, false
	}
	j, ok := s.v1Jobs[id]
	if !ok {
		writeErr(w, errJobNotFound, "")
		return nil, false
	}
	return j, true
}

func (s *Server) handleV1Queue(w http.ResponseWriter, r *http.Request, _ *session) {
	q := r.URL.Query()
	modelType := q.Get("modelType")
	regions, filterRegion := q["region"]
	s.mu.Lock()
	out := []wireV1Job{}
	now := s.now()
	for _, id := range s.v1Order {
		j := s.v1Jobs[id]
		if j.status != StatusWaiting {
			continue
		}
		if modelType != "" && j.job.ModelType != "" && j.job.ModelType != modelType {
			continue
		}
		if filterRegion && !slices.Contains(regions, j.job.Region) {
			continue
		}
		j.expireBookingLocked(now)
		out = append(out, j.wire())
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV1JobInfos(w http.ResponseWriter, r *http.Request, _ *session) {
	s.mu.Lock()
	j, ok := s.v1JobFromPath(w, r)
	if !ok {
		s.mu.Unlock()
		return
	}
	j.expireBookingLocked(s.now())
	out := j.wire()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV1Book(w http.ResponseWriter, r *http.Request, sess *session) {
	var req struct {
		Delay *int64 `json:"delay"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Delay == nil {
		writeErr(w, errWrongRequest, `book body must be {"delay": <seconds>}`)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v1JobFromPath(w, r)
	if !ok {
		return
	}
	now := s.now()
	j.expireBookingLocked(now)
	if j.bookedBy != "" || j.status != StatusWaiting {
		writeErr(w, errJobBooked, fmt.Sprintf("job %d is booked by %q (status %s)", j.job.ID, j.bookedBy, j.status))
		return
	}
	delay := time.Duration(*req.Delay) * time.Second
	if delay <= 0 {
		delay = defaultBookDelay
	}
	j.bookedBy = sess.name
	if svc := s.services[sess.name]; svc != nil {
		j.bookedByID = svc.ID
	}
	j.bookedUntil = now.Add(delay)
	j.bookCount++
	s.notifyLocked()
	writeJSON(w, http.StatusOK, wireV1Booked{
		ProjectKey: j.job.ProjectKey, WorkflowName: j.job.WorkflowName, WorkflowID: j.job.WorkflowID,
		RunID: j.job.RunID, NodeRunName: j.job.NodeRunName, NodeRunID: j.job.WorkflowNodeRunID, JobName: j.job.JobName,
	})
}

func (s *Server) handleV1Release(w http.ResponseWriter, r *http.Request, _ *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v1JobFromPath(w, r)
	if !ok {
		return
	}
	j.bookedBy, j.bookedByID = "", 0
	s.notifyLocked()
	writeNoContent(w)
}

func (s *Server) handleV1SpawnInfos(w http.ResponseWriter, r *http.Request, _ *session) {
	var infos []SpawnInfo
	if !decodeBody(w, r, &infos) {
		return
	}
	for _, in := range infos {
		if in.Message.ID == "" {
			writeErr(w, errWrongRequest, "spawn info without message id")
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v1JobFromPath(w, r)
	if !ok {
		return
	}
	now := s.now()
	for i := range infos {
		infos[i].APITime = now
	}
	j.spawnInfos = append(j.spawnInfos, infos...)
	s.notifyLocked()
	writeNoContent(w)
}

func (s *Server) handleV1Result(w http.ResponseWriter, r *http.Request, _ *session) {
	var res V1JobResult
	if !decodeBody(w, r, &res) {
		return
	}
	if res.Status != StatusFail && res.Status != StatusSuccess {
		writeErr(w, errWrongRequest, fmt.Sprintf("result status %q", res.Status))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v1JobFromPath(w, r)
	if !ok {
		return
	}
	j.results = append(j.results, res)
	j.status = res.Status
	j.done = s.now()
	s.notifyLocked()
	writeNoContent(w)
}

// ---- v2 queue ----

// v2Region checks that the session's hatchery is granted the region of the URL.
func (s *Server) v2Region(w http.ResponseWriter, r *http.Request) (string, bool) {
	region := r.PathValue("region")
	if region != s.opts.Region {
		writeErr(w, errRegionNotGrant, region)
		return "", false
	}
	return region, true
}

func (s *Server) v2JobFromPath(w http.ResponseWriter, r *http.Request, region string) (*v2JobState, bool) {
	j, ok := s.v2Jobs[r.PathValue("id")]
	if !ok || j.job.Region != region {
		writeErr(w, errV2JobNotFound, "")
		return nil, false
	}
	return j, true
}

func (s *Server) handleV2Queue(w http.ResponseWriter, r *http.Request, _ *session) {
	region, ok := s.v2Region(w, r)
	if !ok {
		return
	}
	osarch := r.URL.Query()["osarch"]
	s.mu.Lock()
	out := []V2RunJob{}
	for _, id := range s.v2Order {
		j := s.v2Jobs[id]
		if j.job.Status != StatusWaiting || j.job.Region != region {
			continue
		}
		if j.job.ModelType != "" && j.job.ModelType != s.opts.ModelType {
			continue
		}
		if len(osarch) > 0 && !slices.Contains(osarch, j.job.ModelOSArch) {
			continue
		}
		out = append(out, j.job)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV2JobInfo(w http.ResponseWriter, r *http.Request, _ *session) {
	region, ok := s.v2Region(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	j, ok := s.v2JobFromPath(w, r, region)
	if !ok {
		s.mu.Unlock()
		return
	}
	out := wireV2QueueInfo{RunJob: j.job, Model: j.model}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV2Take(w http.ResponseWriter, r *http.Request, sess *session) {
	region, ok := s.v2Region(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v2JobFromPath(w, r, region)
	if !ok {
		return
	}
	if j.job.Status != StatusWaiting {
		writeErr(w, errJobBooked, fmt.Sprintf("run job is %s (hatchery %q)", j.job.Status, j.job.HatcheryName))
		return
	}
	j.job.Status = StatusScheduling
	j.job.HatcheryName = sess.name
	j.takeCount++
	s.notifyLocked()
	writeJSON(w, http.StatusOK, j.job)
}

func (s *Server) handleV2Release(w http.ResponseWriter, r *http.Request, sess *session) {
	region, ok := s.v2Region(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v2JobFromPath(w, r, region)
	if !ok {
		return
	}
	if j.job.Status != StatusScheduling || j.job.HatcheryName != sess.name {
		writeErr(w, errForbidden, fmt.Sprintf("run job is %s, taken by %q", j.job.Status, j.job.HatcheryName))
		return
	}
	j.job.Status = StatusWaiting
	j.job.HatcheryName = ""
	s.broadcastV2Locked(j)
	s.notifyLocked()
	writeNoContent(w)
}

func (s *Server) handleV2Info(w http.ResponseWriter, r *http.Request, _ *session) {
	region, ok := s.v2Region(w, r)
	if !ok {
		return
	}
	body, _ := io.ReadAll(r.Body)
	var raw map[string]json.RawMessage
	var info V2JobInfo
	if !decodeBytes(w, body, &raw) || !decodeBytes(w, body, &info) {
		return
	}
	for _, k := range []string{"level", "message", "time"} {
		if _, ok := raw[k]; !ok {
			writeErr(w, errWrongRequest, "job info without "+k)
			return
		}
	}
	if !slices.Contains([]string{"info", "warning", "error"}, info.Level) {
		writeErr(w, errWrongRequest, fmt.Sprintf("invalid level %q", info.Level))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.v2JobFromPath(w, r, region)
	if !ok {
		return
	}
	j.infos = append(j.infos, info)
	s.notifyLocked()
	writeNoContent(w)
}

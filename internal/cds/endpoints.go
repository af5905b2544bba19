package cds

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Paths and extra deadlines of section 6.
const (
	pathV1Signin = "/auth/consumer/builtin/signin"
	pathV2Signin = "/v2/auth/consumer/hatchery/signin"

	deadlineWorkers = 5 * time.Second  // #13, #14
	deadlineQueue   = 10 * time.Second // #16, #18, #20, #23
)

func (c *Client) needV1(op string) error {
	if c.v2 {
		return fmt.Errorf("%s: %w (v1 endpoint on the v2 client)", op, ErrWrongClient)
	}
	return nil
}

func (c *Client) needV2(op string) error {
	if !c.v2 {
		return fmt.Errorf("%s: %w (v2 endpoint on the v1 client)", op, ErrWrongClient)
	}
	return nil
}

// SignOut ends the v1 session (#3, POST /auth/consumer/signout) and forgets it locally.
func (c *Client) SignOut(ctx context.Context) error {
	if err := c.needV1("sign out"); err != nil {
		return err
	}
	// Never re-sign-in just to sign out.
	if !c.SessionValid() {
		return nil
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/auth/consumer/signout"})
	c.clearSession()
	return err
}

// Heartbeat posts the monitoring status: v1 POST /services/heartbeat (#4), v2 POST
// /v2/hatchery/heartbeat (#5).
func (c *Client) Heartbeat(ctx context.Context, status MonitoringStatus) error {
	p := "/services/heartbeat"
	if c.v2 {
		p = "/v2/hatchery/heartbeat"
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: p, body: status})
	return err
}

// CDNConfig fetches the CDN configuration: v1 GET /config/cdn (#6), v2 GET /v2/config/cdn (#7).
func (c *Client) CDNConfig(ctx context.Context) (CDNConfig, error) {
	p := "/config/cdn"
	if c.v2 {
		p = "/v2/config/cdn"
	}
	var out CDNConfig
	_, err := c.do(ctx, request{method: http.MethodGet, path: p, out: &out})
	return out, err
}

// WorkerModelsEnabled lists the enabled v1 worker models (#8, GET /worker/model/enabled).
func (c *Client) WorkerModelsEnabled(ctx context.Context) ([]Model, error) {
	if err := c.needV1("list worker models"); err != nil {
		return nil, err
	}
	var out []Model
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/worker/model/enabled", out: &out})
	return out, err
}

func modelPath(group, name string) string {
	return "/worker/model/" + group + "/" + name
}

// WorkerModelGet fetches one v1 worker model (#9, GET /worker/model/{group}/{name}).
func (c *Client) WorkerModelGet(ctx context.Context, group, name string) (Model, error) {
	var out Model
	if err := c.needV1("get worker model"); err != nil {
		return out, err
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: modelPath(group, name), out: &out})
	return out, err
}

// WorkerModelSecrets fetches the secrets of a v1 worker model (#10, GET
// /worker/model/{group}/{name}/secret).
func (c *Client) WorkerModelSecrets(ctx context.Context, group, name string) ([]ModelSecret, error) {
	if err := c.needV1("get worker model secrets"); err != nil {
		return nil, err
	}
	var out []ModelSecret
	_, err := c.do(ctx, request{method: http.MethodGet, path: modelPath(group, name) + "/secret", out: &out})
	return out, err
}

// WorkerModelBook books a v1 worker model for registration (#11, PUT
// /worker/model/{group}/{name}/book, no body).
func (c *Client) WorkerModelBook(ctx context.Context, group, name string) error {
	if err := c.needV1("book worker model"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodPut, path: modelPath(group, name) + "/book"})
	return err
}

// WorkerModelSpawnError reports a registration spawn failure (#12, PUT
// /worker/model/{group}/{name}/error).
func (c *Client) WorkerModelSpawnError(ctx context.Context, group, name string, form SpawnErrorForm) error {
	if err := c.needV1("report worker model spawn error"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodPut, path: modelPath(group, name) + "/error", body: form})
	return err
}

// WorkerList lists the v1 workers visible to the consumer (#13, GET /worker, 5 s deadline).
func (c *Client) WorkerList(ctx context.Context) ([]Worker, error) {
	if err := c.needV1("list workers"); err != nil {
		return nil, err
	}
	var out []Worker
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/worker", out: &out, deadline: deadlineWorkers})
	return out, err
}

// WorkerDisable disables a v1 worker (#14, POST /worker/{id}/disable, 5 s deadline).
func (c *Client) WorkerDisable(ctx context.Context, id string) error {
	if err := c.needV1("disable worker"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/worker/" + id + "/disable", deadline: deadlineWorkers})
	return err
}

// V2WorkerList lists the v2 workers of the hatchery (#15, GET /v2/worker).
func (c *Client) V2WorkerList(ctx context.Context) ([]V2Worker, error) {
	if err := c.needV2("list v2 workers"); err != nil {
		return nil, err
	}
	var out []V2Worker
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v2/worker", out: &out})
	return out, err
}

// QueueWorkflows polls the v1 queue (#16, GET /queue/workflows, 10 s deadline). Each
// element of regions becomes one region parameter, empty strings included: pass
// {"eu", ""} for "region=eu&region=" and nil for no region parameter (section 5).
func (c *Client) QueueWorkflows(ctx context.Context, modelType string, regions []string) ([]WorkflowNodeJobRun, error) {
	if err := c.needV1("poll v1 queue"); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("modelType", modelType)
	for _, r := range regions {
		q.Add("region", r)
	}
	var out []WorkflowNodeJobRun
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/queue/workflows?" + q.Encode(), out: &out, deadline: deadlineQueue})
	return out, err
}

func jobPath(id int64) string {
	return "/queue/workflows/" + strconv.FormatInt(id, 10)
}

// QueueJobInfo fetches a v1 job (#17, GET /queue/workflows/{id}/infos).
func (c *Client) QueueJobInfo(ctx context.Context, id int64) (WorkflowNodeJobRun, error) {
	var out WorkflowNodeJobRun
	if err := c.needV1("get v1 job"); err != nil {
		return out, err
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(id) + "/infos", out: &out})
	return out, err
}

// QueueJobBook books a v1 job (#18, POST /queue/workflows/{id}/book {"delay":0}, 10 s
// deadline).
func (c *Client) QueueJobBook(ctx context.Context, id int64) (WorkflowNodeJobRunBooked, error) {
	var out WorkflowNodeJobRunBooked
	if err := c.needV1("book v1 job"); err != nil {
		return out, err
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(id) + "/book", body: BookRequest{}, out: &out, deadline: deadlineQueue})
	return out, err
}

// QueueJobRelease releases a booked v1 job (#19, DELETE /queue/workflows/{id}/book).
func (c *Client) QueueJobRelease(ctx context.Context, id int64) error {
	if err := c.needV1("release v1 job"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodDelete, path: jobPath(id) + "/book"})
	return err
}

// QueueJobSendSpawnInfo posts spawn infos on a v1 job (#20, POST
// /queue/workflows/{id}/spawn/infos, 10 s deadline).
func (c *Client) QueueJobSendSpawnInfo(ctx context.Context, id int64, infos []SpawnInfo) error {
	if err := c.needV1("send v1 spawn info"); err != nil {
		return err
	}
	if infos == nil {
		infos = []SpawnInfo{}
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(id) + "/spawn/infos", body: infos, deadline: deadlineQueue})
	return err
}

// QueueJobResult posts a v1 job result (#21, POST /queue/workflows/{id}/result; no extra
// deadline).
func (c *Client) QueueJobResult(ctx context.Context, id int64, result Result) error {
	if err := c.needV1("send v1 job result"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(id) + "/result", body: result})
	return err
}

// V2Queue polls the v2 queue of a region (#23, GET /v2/queue/{region}[?osarch=A&osarch=B],
// 10 s deadline). osarch values are appended raw, as the original does.
func (c *Client) V2Queue(ctx context.Context, region string, osarch []string) ([]V2WorkflowRunJob, error) {
	if err := c.needV2("poll v2 queue"); err != nil {
		return nil, err
	}
	p := "/v2/queue/" + region
	for i, oa := range osarch {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		p += sep + "osarch=" + oa
	}
	var out []V2WorkflowRunJob
	_, err := c.do(ctx, request{method: http.MethodGet, path: p, out: &out, deadline: deadlineQueue})
	return out, err
}

func v2JobPath(region, id string) string {
	return "/v2/queue/" + region + "/job/" + id
}

// V2QueueJobInfo fetches a v2 run job and its resolved model (#24, GET
// /v2/queue/{region}/job/{id}).
func (c *Client) V2QueueJobInfo(ctx context.Context, region, id string) (V2QueueJobInfo, error) {
	var out V2QueueJobInfo
	if err := c.needV2("get v2 job"); err != nil {
		return out, err
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: v2JobPath(region, id), out: &out})
	return out, err
}

// V2QueueJobTake takes a v2 run job (#25, POST /v2/queue/{region}/job/{id}/hatchery/take).
func (c *Client) V2QueueJobTake(ctx context.Context, region, id string) (V2WorkflowRunJob, error) {
	var out V2WorkflowRunJob
	if err := c.needV2("take v2 job"); err != nil {
		return out, err
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: v2JobPath(region, id) + "/hatchery/take", out: &out})
	return out, err
}

// V2QueueJobRelease releases a taken v2 run job (#26, DELETE
// /v2/queue/{region}/job/{id}/hatchery/take).
func (c *Client) V2QueueJobRelease(ctx context.Context, region, id string) error {
	if err := c.needV2("release v2 job"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodDelete, path: v2JobPath(region, id) + "/hatchery/take"})
	return err
}

// V2QueueJobSendInfo posts an info message on a v2 run job (#27, POST
// /v2/queue/{region}/job/{id}/info).
func (c *Client) V2QueueJobSendInfo(ctx context.Context, region, id string, info V2SendJobRunInfo) error {
	if err := c.needV2("send v2 job info"); err != nil {
		return err
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: v2JobPath(region, id) + "/info", body: info})
	return err
}

// V2WorkerModelGet fetches an as-code worker model (#29, GET
// /v2/project/{proj}/vcs/{vcs}/repository/{repo}/workermodel/{name}?branch={branch}). vcs
// and repo are path-escaped (a "/" in the repository becomes %2F); proj and name are
// inserted as-is.
func (c *Client) V2WorkerModelGet(ctx context.Context, projKey, vcs, repo, name, branch string) (V2WorkerModel, error) {
	var out V2WorkerModel
	if err := c.needV2("get v2 worker model"); err != nil {
		return out, err
	}
	p := "/v2/project/" + projKey + "/vcs/" + url.PathEscape(vcs) + "/repository/" + url.PathEscape(repo) +
		"/workermodel/" + name + "?branch=" + url.QueryEscape(branch)
	_, err := c.do(ctx, request{method: http.MethodGet, path: p, out: &out})
	return out, err
}

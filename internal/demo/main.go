// Command demo drives the management API for `make demo` (scripts/demo.sh):
// it uploads a release, creates a phased deployment and shows the
// deployment's progress until it ends. The server URL and an API token
// come from ROTA_SERVER and ROTA_TOKEN.
//
//	go run ./internal/demo upload FILE.rota      print the new release's ID
//	go run ./internal/demo deploy RELEASE-ID     print the new deployment's ID
//	go run ./internal/demo watch DEPLOYMENT-ID   show progress until it ends
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: demo upload FILE | deploy RELEASE | watch DEPLOYMENT")
	}
	c := client{url: strings.TrimRight(os.Getenv("ROTA_SERVER"), "/"),
		token: os.Getenv("ROTA_TOKEN")}
	if c.url == "" || c.token == "" {
		return errors.New("set ROTA_SERVER and ROTA_TOKEN")
	}
	switch args[0] {
	case "upload":
		raw, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		var rel struct{ ID, Version string }
		if err := c.do("POST", "/api/v1/releases", "application/vnd.rota.bundle", raw,
			&rel); err != nil {
			return err
		}
		fmt.Println(rel.ID)
	case "deploy":
		return c.deploy(args[1])
	case "watch":
		return c.watch(args[1])
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}

// deploy creates the demo's phased deployment to every accepted device:
// a canary of two devices, then a quarter, then the rest, each phase
// after the previous one fully succeeded and soaked for five seconds,
// pausing by itself if more than 10 % of a phase fails.
func (c client) deploy(release string) error {
	req := map[string]any{
		"name":      "demo rollout",
		"releaseId": release,
		"target":    map[string]any{"filter": map[string]any{"status": "accepted"}},
		"strategy": map[string]any{
			"phases": []map[string]any{
				{"count": 2, "soak": int64(5 * time.Second)},
				{"percent": 25, "soak": int64(5 * time.Second)},
				{},
			},
			"failureThreshold": map[string]any{"percent": 10},
			"maxConcurrent":    10,
			"retries":          1,
		},
	}
	body, _ := json.Marshal(req)
	var dep struct{ ID string }
	if err := c.do("POST", "/api/v1/deployments", "application/json", body, &dep); err != nil {
		return err
	}
	fmt.Println(dep.ID)
	return nil
}

type counts struct {
	Total      int            `json:"total"`
	States     map[string]int `json:"states"`
	InProgress int            `json:"inProgress"`
	Phases     []struct {
		Total  int            `json:"total"`
		States map[string]int `json:"states"`
	} `json:"phases"`
}

// watch prints a line whenever the deployment's counts change, until it
// is finished, paused or aborted.
func (c client) watch(id string) error {
	last := ""
	for {
		var d struct {
			Status  string
			Release struct{ Version string }
			Counts  counts
		}
		if err := c.do("GET", "/api/v1/deployments/"+id, "", nil, &d); err != nil {
			return err
		}
		line := fmt.Sprintf("%-8s %s", d.Status, progress(d.Counts))
		if line != last {
			fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), line)
			last = line
		}
		switch d.Status {
		case "finished", "aborted":
			return nil
		case "paused":
			return fmt.Errorf("deployment %s paused: too many failures", id)
		}
		time.Sleep(time.Second)
	}
}

// progress renders the share of successful devices per phase and the
// other states, such as "phase 1 [##########] 2/2  phase 2 [###.......] 1/5".
func progress(c counts) string {
	var b strings.Builder
	for i, p := range c.Phases {
		done := p.States["success"] + p.States["already-installed"]
		bar := 0
		if p.Total > 0 {
			bar = done * 10 / p.Total
		}
		fmt.Fprintf(&b, "phase %d [%s%s] %d/%d  ", i+1, strings.Repeat("#", bar),
			strings.Repeat(".", 10-bar), done, p.Total)
	}
	var states []string
	for s, n := range c.States {
		if n > 0 {
			states = append(states, fmt.Sprintf("%s=%d", s, n))
		}
	}
	sort.Strings(states)
	return b.String() + strings.Join(states, " ")
}

type client struct{ url, token string }

func (c client) do(method, path, ctype string, body []byte, out any) error {
	req, err := http.NewRequest(method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, raw)
	}
	return json.Unmarshal(raw, out)
}

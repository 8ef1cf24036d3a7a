package rota

import (
	"context"
	"io"

	"github.com/rotaupdate/rota/poll"
)

// PollServer adapts a poll.Client to the agent's Server.
type PollServer struct {
	// Client talks to the device API.
	Client *poll.Client
}

// Check implements Server.
func (s PollServer) Check(ctx context.Context, req poll.CheckRequest) (*poll.CheckResponse,
	error) {
	return s.Client.Check(ctx, req)
}

// Download implements Server; the download resumes by itself after
// network errors.
func (s PollServer) Download(ctx context.Context, url string, offset int64) (io.ReadCloser,
	error) {
	return s.Client.Download(ctx, url, offset)
}

// Report implements Server.
func (s PollServer) Report(ctx context.Context, deploymentID string, r poll.Report) error {
	return s.Client.Report(ctx, deploymentID, r)
}

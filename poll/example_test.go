package poll_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// This example shows the loop of a device: check, wait for the server's
// interval with jitter, and download an update when one is offered.
func Example() {
	ctx := context.Background()
	key, err := poll.LoadOrCreateKey("/var/lib/rota/device.key")
	if err != nil {
		slog.Error("load key", "err", err)
		return
	}
	c, err := poll.New(poll.Config{
		ServerURL: "https://rota.example.com",
		Key:       key,
		Identity:  map[string]string{"serial": "SN-0001"},
	})
	if err != nil {
		slog.Error("new client", "err", err)
		return
	}

	for {
		resp, err := c.Check(ctx, poll.CheckRequest{Compatible: "acme-board-v2"})
		var perr *poll.Error
		switch {
		case errors.As(err, &perr) && perr.Temporary():
			time.Sleep(poll.NextPoll(max(perr.RetryAfter, poll.DefaultPollInterval)))
			continue
		case err != nil:
			slog.Error("check", "err", err)
			return
		case resp.Update != nil:
			d, err := c.Download(ctx, resp.Update.BundleURL, 0)
			if err == nil {
				_, err = io.Copy(io.Discard, d) // an agent streams into a slot
				d.Close()
			}
			slog.Info("downloaded", "err", err)
		}
		time.Sleep(poll.NextPoll(resp.Interval()))
	}
}

package poll_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/poll"
)

func TestCheckRequest_Validate(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0f", 32)
	edit := func(f func(*poll.CheckRequest)) poll.CheckRequest {
		r := checkRequest
		r.Slots = append([]poll.SlotInfo(nil), checkRequest.Slots...)
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		req     poll.CheckRequest
		wantErr string
	}{
		{name: "a full request is valid", req: checkRequest},
		{name: "an installed digest is valid",
			req: edit(func(r *poll.CheckRequest) { r.Installed.Digest = digest })},
		{name: "no compatible string", req: edit(func(r *poll.CheckRequest) { r.Compatible = "" }),
			wantErr: "compatible is empty"},
		{name: "an upper-case digest",
			req: edit(func(r *poll.CheckRequest) {
				r.Installed.Digest = strings.ToUpper(digest)
			}),
			wantErr: "installed.digest"},
		{name: "a slot without a class",
			req:     edit(func(r *poll.CheckRequest) { r.Slots[1].Class = "" }),
			wantErr: "slot 1"},
		{name: "too many slots",
			req: edit(func(r *poll.CheckRequest) {
				r.Slots = make([]poll.SlotInfo, poll.MaxSlots+1)
			}),
			wantErr: "slots"},
		{name: "an overlong version",
			req: edit(func(r *poll.CheckRequest) {
				r.Installed.Version = strings.Repeat("1", poll.MaxFieldSize+1)
			}),
			wantErr: "installed.version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, poll.ErrInvalid)
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestCheckResponse_Validate(t *testing.T) {
	edit := func(f func(*poll.Update)) *poll.CheckResponse {
		u := *sampleUpdate
		f(&u)
		return &poll.CheckResponse{Update: &u}
	}
	tests := []struct {
		name    string
		resp    *poll.CheckResponse
		wantErr string
	}{
		{name: "no update is valid", resp: &poll.CheckResponse{}},
		{name: "an update is valid", resp: &poll.CheckResponse{Update: sampleUpdate}},
		{name: "a negative interval", resp: &poll.CheckResponse{PollInterval: -1},
			wantErr: "poll interval"},
		{name: "no deployment id",
			resp: edit(func(u *poll.Update) { u.DeploymentID = "" }), wantErr: "deploymentId"},
		{name: "a zero size",
			resp: edit(func(u *poll.Update) { u.Size = 0 }), wantErr: "size"},
		{name: "no bundle url",
			resp: edit(func(u *poll.Update) { u.BundleURL = "" }), wantErr: "bundleUrl"},
		{name: "a bad bundle url",
			resp: edit(func(u *poll.Update) { u.BundleURL = "http://[::1" }), wantErr: "bundleUrl"},
		{name: "a short digest",
			resp: edit(func(u *poll.Update) { u.Digest = "sha256:abc" }), wantErr: "digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.resp.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, poll.ErrInvalid)
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestValidateAttributes(t *testing.T) {
	tests := []struct {
		name    string
		attrs   map[string]string
		wantErr bool
	}{
		{name: "nil is valid"},
		{name: "usual names are valid",
			attrs: map[string]string{"serial": "1", "net/eth0.mac": "02:00", "cpu_model-x:y": ""}},
		{name: "an empty name", attrs: map[string]string{"": "x"}, wantErr: true},
		{name: "a name with a space", attrs: map[string]string{"a b": "x"}, wantErr: true},
		{name: "a name too long",
			attrs:   map[string]string{strings.Repeat("k", poll.MaxAttributeKeySize+1): "x"},
			wantErr: true},
		{name: "a value that is not UTF-8", attrs: map[string]string{"k": "\xff"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := poll.ValidateAttributes(tt.attrs)
			if tt.wantErr {
				assert.ErrorIs(t, err, poll.ErrInvalid)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/roomdir"
)

// The published room directory over federation (spec: GET and POST
// /_matrix/federation/v1/publicRooms): the same listing local clients
// get (roomdir), and the client API's way to read another server's.

// directory is the room directory lister; it pages on the global stream
// the transactions also write to.
func (f *Federation) directory() *roomdir.Lister { return roomdir.New(f.db, f.txns.stream) }

func (f *Federation) publicRoomsGet(r *http.Request) (any, error) {
	req, err := roomdir.ParseQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	return f.directory().List(r.Context(), req)
}

func (f *Federation) publicRoomsPost(r *http.Request) (any, error) {
	var req roomdir.Request
	if err := decodeContent(r, &req); err != nil {
		return nil, err
	}
	return f.directory().List(r.Context(), req)
}

// PublicRooms asks another server for a page of its room directory: a
// GET when the request has no filter (which every server understands),
// a POST otherwise. The answer's rooms are passed on as the server sent
// them, so that fields this server does not know survive.
func (f *Federation) PublicRooms(ctx context.Context, server spec.ServerName, req roomdir.Request) (json.RawMessage, error) {
	if f.Denied(server) {
		return nil, mxerr.Forbidden("This server does not federate with " + string(server))
	}
	const path = "/_matrix/federation/v1/publicRooms"
	var resp struct {
		Chunk                  []json.RawMessage `json:"chunk"`
		NextBatch              string            `json:"next_batch,omitempty"`
		PrevBatch              string            `json:"prev_batch,omitempty"`
		TotalRoomCountEstimate *int64            `json:"total_room_count_estimate,omitempty"`
	}
	var err error
	if req.Filter == nil {
		q := url.Values{}
		if req.Limit != nil && *req.Limit > 0 {
			q.Set("limit", strconv.Itoa(*req.Limit))
		}
		if req.Since != "" {
			q.Set("since", req.Since)
		}
		if req.IncludeAllNetworks {
			q.Set("include_all_networks", "true")
		}
		if req.ThirdPartyInstanceID != "" {
			q.Set("third_party_instance_id", req.ThirdPartyInstanceID)
		}
		p := path
		if len(q) > 0 {
			p += "?" + q.Encode()
		}
		err = f.requestJSON(ctx, http.MethodGet, server, p, nil, &resp)
	} else {
		err = f.requestJSON(ctx, http.MethodPost, server, path, req, &resp)
	}
	if err != nil {
		return nil, err
	}
	if resp.Chunk == nil {
		resp.Chunk = []json.RawMessage{}
	}
	for _, c := range resp.Chunk {
		if !isObject(c) {
			return nil, mxerr.Unavailable(fmt.Sprintf("%s sent a malformed room directory", server))
		}
	}
	return json.Marshal(resp)
}

func isObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}

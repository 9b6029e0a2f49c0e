package httpapi

import (
	"net/http"

	"github.com/quicpush/quicpush/stream"
)

// maxReasonLen keeps a disconnect reason within the CONNECTION_CLOSE
// frame that carries it.
const maxReasonLen = 256

// disconnectCodes are the close codes a disconnect may use, by their
// protocol names: UNAUTHORIZED is terminal (the client stays away until it
// has a new token), SHUTTING_DOWN makes it reconnect. Request codes such as
// FORBIDDEN mean nothing in a close: clients just reconnect.
var disconnectCodes = map[string]stream.ErrCode{
	stream.Unauthorized.String(): stream.Unauthorized,
	stream.ShuttingDown.String(): stream.ShuttingDown,
}

// disconnect serves POST /v1/users/{user}/disconnect with an optional body
// {"code","reason"} (defaults: UNAUTHORIZED, "disconnected by the server's
// operator").
func (h *handler) disconnect(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	if user == "" || len(user) > stream.MaxIDLen {
		h.fail(w, r, badRequest("user: must be 1 to %d bytes", stream.MaxIDLen))
		return
	}
	body := struct {
		Code   string `json:"code"`
		Reason string `json:"reason"`
	}{Code: stream.Unauthorized.String(), Reason: "disconnected by the server's operator"}
	if e := decode(w, r, 4<<10, true, &body); e != nil {
		h.fail(w, r, e)
		return
	}
	code, ok := disconnectCodes[body.Code]
	if !ok {
		h.fail(w, r, badRequest("code: %q is not one of UNAUTHORIZED, SHUTTING_DOWN", body.Code))
		return
	}
	if len(body.Reason) > maxReasonLen {
		h.fail(w, r, badRequest("reason: must be at most %d bytes", maxReasonLen))
		return
	}
	n := h.srv.DisconnectUser(user, code, body.Reason)
	writeJSON(w, http.StatusOK, struct {
		User   string `json:"user"`
		Closed int    `json:"closed"`
	}{user, n})
}

package stream

import (
	"strings"
	"unicode"
)

// Conversations (docs/PROTOCOL.md §15): every user has an inbox channel
// that only the server writes, holding InboxRecords.

// MaxChatSize is the largest ChatSend data: the InboxRecord that wraps it
// must stay within MaxMessageSize.
const MaxChatSize = MaxMessageSize - 512

// InboxChannel is user's inbox channel: "user/<user>/inbox".
func InboxChannel(user string) string { return "user/" + user + "/inbox" }

// InboxOwner returns the user whose inbox channel is, if it is one.
func InboxOwner(channel string) (user string, ok bool) {
	rest, ok := strings.CutPrefix(channel, "user/")
	if !ok {
		return "", false
	}
	user, ok = strings.CutSuffix(rest, "/inbox")
	if !ok || ValidateChatUser(user) != nil {
		return "", false
	}
	return user, true
}

// ValidateChatUser checks a user name that can have an inbox: 1 to MaxIDLen
// bytes, valid in a channel name, and without '/' (so that one user's inbox
// is never another user's sub-channel).
func ValidateChatUser(user string) error {
	if user == "" || len(user) > MaxIDLen || strings.Contains(user, "/") {
		return Errorf(BadRequest, "user name %q cannot have an inbox: it must be 1 to %d bytes without '/'", user, MaxIDLen)
	}
	if err := ValidateChannel(InboxChannel(user)); err != nil {
		return Errorf(BadRequest, "user name %q cannot have an inbox: %v", user, err.(*Error).Message)
	}
	return nil
}

// ValidateChatID checks the client message id of a ChatSend: required (it
// makes the send idempotent), at most MaxIDLen bytes, with no control
// character (the server's own record ids start with one, so a client id can
// never collide with them).
func ValidateChatID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return Errorf(BadRequest, "chat message id must be 1 to %d bytes", MaxIDLen)
	}
	for _, c := range id {
		if unicode.IsControl(c) {
			return Errorf(BadRequest, "chat message id %q has a control character", id)
		}
	}
	return nil
}

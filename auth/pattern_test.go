package auth_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/auth"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, sub, channel string
		want                  bool
	}{
		{"room/*", "", "room/math-101", true},
		{"room/*", "", "room/math-101/quiz", false},
		{"room/*", "", "room", false},
		{"room/math-*", "", "room/math-101", true},
		{"room/math-*", "", "room/art-1", false},
		{"room/??", "", "room/ab", true},
		{"room/[a-c]1", "", "room/b1", true},
		{"room/[a-c]1", "", "room/d1", false},
		{"room/**", "", "room", true},
		{"room/**", "", "room/a", true},
		{"room/**", "", "room/a/b/c", true},
		{"room/**", "", "rooms/a", false},
		{"**", "", "anything/at/all", true},
		{"room/*/**", "", "room/a/b", true},
		{"room/*/**", "", "room", false},
		{"room/a", "", "room/a", true},
		{"room/a", "", "room/ab", false},
		// {sub} is the token's subject, taken literally.
		{"user/{sub}", "alice", "user/alice", true},
		{"user/{sub}", "alice", "user/bob", false},
		{"user/{sub}/**", "alice", "user/alice", true},
		{"user/{sub}/**", "alice", "user/alice/inbox", true},
		{"user/{sub}/**", "alice", "user/alice2", false},
		{"user/{sub}/**", "a*", "user/a*/inbox", true},
		{"user/{sub}/**", "a*", "user/alice", false},
		{"user/{sub}", "[ab]", "user/a", false},
		{"user/{sub}", "[ab]", "user/[ab]", true},
		{"dm/{sub}-*", "alice", "dm/alice-bob", true},
		{"dm/{sub}-*", "alice", "dm/bob-alice", false},
		// Invalid patterns match nothing.
		{"room/**/x", "", "room/a/x", false},
		{"room/[", "", "room/[", false},
	} {
		require.Equal(t, tc.want, auth.Match(tc.pattern, tc.sub, tc.channel), "%q (sub %q) vs %q", tc.pattern, tc.sub, tc.channel)
	}
}

func TestValidatePattern(t *testing.T) {
	for _, p := range []string{"room/*", "room/**", "**", "user/{sub}/**", `room/\*`, "room/[a-z]?"} {
		require.NoError(t, auth.ValidatePattern(p), p)
	}
	for p, want := range map[string]string{
		"":          "empty pattern",
		"room/**/x": "** may only be the last segment",
		"room/[":    "syntax error in pattern",
		`room/a\`:   "syntax error in pattern",
	} {
		require.ErrorContains(t, auth.ValidatePattern(p), want, "%q", p)
	}
}

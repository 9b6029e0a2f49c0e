package auth

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// subPlaceholder in a pattern stands for the token's subject.
const subPlaceholder = "{sub}"

// ValidatePattern reports whether p is a channel pattern (see the package
// documentation): not empty, "**" only as its last segment, and every other
// segment valid for path.Match.
func ValidatePattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		if seg == "**" {
			if i != len(segs)-1 {
				return fmt.Errorf("pattern %q: ** may only be the last segment", p)
			}
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("pattern %q: segment %q: %w", p, seg, err)
		}
	}
	return nil
}

// Match reports whether channel matches pattern for a token whose subject is
// sub. An invalid pattern matches nothing.
func Match(pattern, sub, channel string) bool {
	pattern = strings.ReplaceAll(pattern, subPlaceholder, escapeMeta(sub))
	ps, cs := strings.Split(pattern, "/"), strings.Split(channel, "/")
	if ps[len(ps)-1] == "**" {
		ps = ps[:len(ps)-1]
		if len(cs) < len(ps) {
			return false
		}
		cs = cs[:len(ps)] // ** takes the rest, even nothing
	}
	if len(ps) != len(cs) {
		return false
	}
	for i := range ps {
		if ps[i] == "**" { // not last: invalid
			return false
		}
		if ok, err := path.Match(ps[i], cs[i]); !ok || err != nil {
			return false
		}
	}
	return true
}

// matchAny reports whether channel matches one of patterns.
func matchAny(patterns []string, sub, channel string) bool {
	for _, p := range patterns {
		if Match(p, sub, channel) {
			return true
		}
	}
	return false
}

// escapeMeta makes path.Match take s literally, so a subject such as "a*"
// grants "user/a*" and not every user's channels.
func escapeMeta(s string) string {
	if !strings.ContainsAny(s, `*?[\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

package auth_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/server"
)

var secret = []byte("0123456789abcdef0123456789abcdef-test-secret")

func newVerifier(t *testing.T, cfg auth.Config) *auth.Verifier {
	t.Helper()
	v, err := auth.New(cfg)
	require.NoError(t, err)
	return v
}

func mint(t *testing.T, c auth.Claims, key any) string {
	t.Helper()
	token, err := auth.Mint(c, key)
	require.NoError(t, err)
	return token
}

// alice is valid for an hour.
func alice() auth.Claims {
	return auth.Claims{
		Subject:   "alice",
		ExpiresAt: time.Now().Add(time.Hour),
		IssuedAt:  time.Now(),
		Subscribe: []string{"room/*", "user/{sub}/**"},
		Publish:   []string{"room/*", "user/{sub}"},
		Role:      "student",
	}
}

func authenticate(v *auth.Verifier, token string) (server.HelloReply, error) {
	return v.Authenticate(context.Background(), server.HelloEvent{Token: token})
}

func TestValidTokens(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	for _, tc := range []struct {
		alg     string
		cfg     auth.Config
		signKey any
	}{
		{"HS256", auth.Config{Secret: secret}, secret},
		{"EdDSA", auth.Config{PublicKey: edPub}, edPriv},
		{"RS256", auth.Config{PublicKey: &rsaKey.PublicKey}, rsaKey},
	} {
		v := newVerifier(t, tc.cfg)
		require.Equal(t, tc.alg, v.Algorithm())
		c := alice()
		reply, err := authenticate(v, mint(t, c, tc.signKey))
		require.NoError(t, err, tc.alg)
		require.Equal(t, "alice", reply.User)
		require.Equal(t, c.ExpiresAt.Truncate(time.Second).Unix(), reply.ExpiresAt.Unix(), "ExpiresAt is exp")
		got := reply.Claims.(*auth.Claims)
		require.Equal(t, c.Subscribe, got.Subscribe)
		require.Equal(t, c.Publish, got.Publish)
		require.Equal(t, "student", got.Role)
		require.Equal(t, c.IssuedAt.Unix(), got.IssuedAt.Unix())
	}
}

func TestRefusedTokens(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	hs := newVerifier(t, auth.Config{Secret: secret})
	ed := newVerifier(t, auth.Config{PublicKey: edPub})

	expired := alice()
	expired.ExpiresAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	notYet := alice()
	notYet.NotBefore = time.Now().Add(time.Hour)
	future := alice()
	future.IssuedAt = time.Now().Add(time.Hour)
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	// The classic confusion: an HMAC keyed with the public key's bytes.
	confused, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString([]byte(edPub))
	require.NoError(t, err)
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString(secret)
	require.NoError(t, err)
	noSub, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	require.NoError(t, err)
	badPattern, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"room/**/x"}}).SignedString(secret)
	require.NoError(t, err)
	wrongType, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "subscribe": "room/*"}).SignedString(secret)
	require.NoError(t, err)
	tampered := mint(t, alice(), secret)
	tampered = tampered[:len(tampered)-4] + "AAAA"

	for _, tc := range []struct {
		name  string
		v     *auth.Verifier
		token string
		want  string
	}{
		{"anonymous", hs, "", "no token: this server accepts only clients with a signed token (HS256)"},
		{"not a JWT", hs, "not-a-jwt", "token is malformed"},
		{"expired", hs, mint(t, expired, secret), "token expired at 2025-01-02T03:04:05Z"},
		{"not yet valid", hs, mint(t, notYet, secret), "token not valid before "},
		{"issued in the future", hs, mint(t, future, secret), "token issued in the future"},
		{"other secret", hs, mint(t, alice(), []byte("another secret, long enough to be accepted")), "signature invalid: the token was not signed with this server's key"},
		{"tampered", hs, tampered, "signature invalid"},
		{"other Ed25519 key", ed, mint(t, alice(), otherEd), "signature invalid"},
		{"alg none", hs, none, `token algorithm "none" is not accepted: this server verifies HS256 tokens`},
		{"alg none against EdDSA", ed, none, `token algorithm "none" is not accepted`},
		{"HS256 against EdDSA", ed, mint(t, alice(), secret), `token algorithm "HS256" is not accepted: this server verifies EdDSA tokens`},
		{"HMAC keyed with the public key", ed, confused, `token algorithm "HS256" is not accepted`},
		{"EdDSA against HS256", hs, mint(t, alice(), edPriv), `token algorithm "EdDSA" is not accepted`},
		{"no exp", hs, noExp, "the exp claim is missing: tokens must expire"},
		{"no sub", hs, noSub, "the sub claim (the user) must be 1 to 128 bytes, not 0"},
		{"bad pattern", hs, badPattern, `subscribe claim: pattern "room/**/x": ** may only be the last segment`},
		{"claim of the wrong type", hs, wrongType, "token is malformed"},
	} {
		_, err := authenticate(tc.v, tc.token)
		require.ErrorIs(t, err, auth.ErrInvalidToken, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
		if tc.token != "" {
			require.NotContains(t, err.Error(), tc.token, "%s: the token is never echoed", tc.name)
		}
	}
}

func TestVerifyAtTime(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret, Leeway: -1})
	c := alice()
	c.NotBefore = time.Now().Add(time.Minute)
	token := mint(t, c, secret)
	_, err := v.Verify(token, time.Now())
	require.ErrorContains(t, err, "not valid before")
	_, err = v.Verify(token, time.Now().Add(2*time.Minute))
	require.NoError(t, err)
	_, err = v.Verify(token, c.ExpiresAt.Add(time.Second))
	require.ErrorContains(t, err, "token expired at")

	// The default leeway (30 s) forgives an issuer's clock slightly ahead.
	lenient := newVerifier(t, auth.Config{Secret: secret})
	c.NotBefore = time.Now().Add(10 * time.Second)
	_, err = lenient.Verify(mint(t, c, secret), time.Now())
	require.NoError(t, err)
}

func authorize(v *auth.Verifier, token string, action server.Action, channel string, droppable bool) error {
	reply, err := authenticate(v, token)
	if err != nil {
		return err
	}
	return v.Authorize(context.Background(), server.AuthorizeEvent{User: reply.User, Claims: reply.Claims, Action: action, Channel: channel, Droppable: droppable})
}

func TestAuthorize(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret})
	student := mint(t, alice(), secret)
	teacherClaims := alice()
	teacherClaims.Subject, teacherClaims.Role = "bob", "teacher"
	teacher := mint(t, teacherClaims, secret)
	sub, pub := server.ActionSubscribe, server.ActionPublish
	for _, tc := range []struct {
		name      string
		token     string
		action    server.Action
		channel   string
		droppable bool
		want      string // "" when allowed
	}{
		{"subscribe a room", student, sub, "room/math-101", false, ""},
		{"subscribe below a room", student, sub, "room/math-101/quiz", false, "channel room/math-101/quiz is not in the token's subscribe patterns"},
		{"subscribe elsewhere", student, sub, "news/today", false, "channel news/today is not in the token's subscribe patterns"},
		{"subscribe own channel", student, sub, "user/alice", false, ""},
		{"subscribe below own channel", student, sub, "user/alice/inbox", false, ""},
		{"subscribe another user's channel", student, sub, "user/bob", false, "channel user/bob is not in the token's subscribe patterns"},
		{"{sub} is the teacher's own", teacher, sub, "user/bob/inbox", false, ""},
		{"{sub} is not alice's for the teacher", teacher, sub, "user/alice", false, "channel user/alice is not in the token's subscribe patterns"},
		{"publish elsewhere", student, pub, "news/today", false, "channel news/today is not in the token's publish patterns"},
		{"publish below own channel", student, pub, "user/alice/inbox", false, "channel user/alice/inbox is not in the token's publish patterns"},
		{"publish own channel", student, pub, "user/alice", false, ""},
		{"student: droppable to a room", student, pub, "room/math-101", true, ""},
		{"student: reliable to a room", student, pub, "room/math-101", false, `role "student" may not publish reliable messages to room/math-101 (roles allowed: teacher, admin)`},
		{"teacher: reliable to a room", teacher, pub, "room/math-101", false, ""},
		{"teacher: still within patterns", teacher, pub, "room/math-101/x", false, "channel room/math-101/x is not in the token's publish patterns"},
	} {
		err := authorize(v, tc.token, tc.action, tc.channel, tc.droppable)
		if tc.want == "" {
			require.NoError(t, err, tc.name)
			continue
		}
		require.ErrorIs(t, err, auth.ErrForbidden, tc.name)
		require.EqualError(t, err, tc.want, tc.name)
	}

	noRole := alice()
	noRole.Role = ""
	err := authorize(v, mint(t, noRole, secret), pub, "room/a", false)
	require.EqualError(t, err, "a token without a role may not publish reliable messages to room/a (roles allowed: teacher, admin)")

	nothing := alice()
	nothing.Subscribe, nothing.Publish = nil, nil
	require.ErrorContains(t, authorize(v, mint(t, nothing, secret), sub, "room/a", false), "not in the token's subscribe patterns")

	err = v.Authorize(context.Background(), server.AuthorizeEvent{User: "alice", Action: sub, Channel: "room/a"})
	require.ErrorIs(t, err, auth.ErrForbidden, "no claims: refused")
}

func TestRoomPublisherRoles(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret, RoomPublisherRoles: []string{"student"}})
	require.NoError(t, authorize(v, mint(t, alice(), secret), server.ActionPublish, "room/a", false))
	teacher := alice()
	teacher.Role = "teacher"
	require.ErrorContains(t, authorize(v, mint(t, teacher, secret), server.ActionPublish, "room/a", false), `role "teacher" may not publish reliable messages to room/a (roles allowed: student)`)

	nobody := newVerifier(t, auth.Config{Secret: secret, RoomPublisherRoles: []string{}})
	require.ErrorContains(t, authorize(nobody, mint(t, teacher, secret), server.ActionPublish, "room/a", false), "(roles allowed: none)")
	require.NoError(t, authorize(nobody, mint(t, teacher, secret), server.ActionPublish, "room/a", true), "droppable messages need no role")
}

func TestNewAndMintRefuseBadKeys(t *testing.T) {
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	for _, tc := range []struct {
		cfg  auth.Config
		want string
	}{
		{auth.Config{}, "set exactly one of Config.Secret and Config.PublicKey"},
		{auth.Config{Secret: secret, PublicKey: edPub}, "set exactly one"},
		{auth.Config{Secret: []byte("short")}, "an HS256 secret of 5 bytes is too short: use at least 32"},
		{auth.Config{PublicKey: &small.PublicKey}, "an RSA key of 1024 bits is too short"},
		{auth.Config{PublicKey: "a string"}, "a string key is not supported"},
	} {
		_, err := auth.New(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}

	for _, tc := range []struct {
		claims auth.Claims
		key    any
		want   string
	}{
		{alice(), []byte("short"), "too short"},
		{alice(), small, "an RSA key of 1024 bits is too short"},
		{alice(), "a string", "a string key cannot sign tokens"},
		{auth.Claims{Subject: "alice"}, secret, "the exp claim is missing"},
		{auth.Claims{ExpiresAt: time.Now()}, secret, "the sub claim"},
		{auth.Claims{Subject: "a", ExpiresAt: time.Now(), Publish: []string{""}}, secret, "publish claim: empty pattern"},
	} {
		_, err := auth.Mint(tc.claims, tc.key)
		require.ErrorContains(t, err, tc.want)
	}
}

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

func TestLoadKeys(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pubDER, err := x509.MarshalPKIXPublicKey(edPub)
	require.NoError(t, err)
	privDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	require.NoError(t, err)

	pub, err := auth.LoadPublicKey(writePEM(t, "PUBLIC KEY", pubDER))
	require.NoError(t, err)
	priv, err := auth.LoadPrivateKey(writePEM(t, "PRIVATE KEY", privDER))
	require.NoError(t, err)
	v := newVerifier(t, auth.Config{PublicKey: pub})
	_, err = authenticate(v, mint(t, alice(), priv))
	require.NoError(t, err)

	_, err = auth.LoadPublicKey(writePEM(t, "PRIVATE KEY", privDER))
	require.ErrorContains(t, err, "not a PKIX public key")
	_, err = auth.LoadPrivateKey(writePEM(t, "PUBLIC KEY", pubDER))
	require.ErrorContains(t, err, "not a PKCS #8 private key")
	garbage := filepath.Join(t.TempDir(), "garbage")
	require.NoError(t, os.WriteFile(garbage, []byte("secret-looking garbage"), 0o600))
	_, err = auth.LoadPublicKey(garbage)
	require.ErrorContains(t, err, "no PEM block")
	require.NotContains(t, err.Error(), "secret-looking")

	secretFile := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secretFile, append(secret, "\n"...), 0o600))
	s, err := auth.LoadSecret(secretFile)
	require.NoError(t, err)
	require.Equal(t, secret, s, "trailing white space is not part of the secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("short-secret\n"), 0o600))
	_, err = auth.LoadSecret(secretFile)
	require.ErrorContains(t, err, "an HS256 secret of 12 bytes is too short")
	require.NotContains(t, err.Error(), "short-secret")
}

func TestConfigLogValueRedactsTheSecret(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("auth", "config", auth.Config{Secret: secret})
	require.Contains(t, buf.String(), `"algorithm":"HS256"`)
	require.Contains(t, buf.String(), `"secret":"[redacted]"`)
	require.NotContains(t, buf.String(), string(secret))
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// flags are quicpushd's settings. Each comes, first found, from the command
// line, the environment (QUICPUSH_<FLAG>), the --config file, or the default.
type flags struct {
	Listen    string        `default:":4433" env:"QUICPUSH_LISTEN" placeholder:"ADDR" help:"UDP address to serve QUIC on (default: ${default})."`
	Data      string        `default:"./data" env:"QUICPUSH_DATA" placeholder:"DIR" help:"Directory of the store, the server's persisted keys and the dev certificates (DIR/certs/ca.pem is the CA clients need when no --cert is given) (default: ${default})."`
	Cert      string        `env:"QUICPUSH_CERT" and:"cert" placeholder:"FILE" help:"PEM certificate chain to serve (with --key); default: a dev certificate signed by a generated CA. SIGHUP reloads it."`
	Key       string        `env:"QUICPUSH_KEY" and:"cert" placeholder:"FILE" help:"PEM private key of --cert."`
	Admin     string        `default:"127.0.0.1:8080" env:"QUICPUSH_ADMIN" placeholder:"ADDR" help:"TCP address of the admin HTTP server (/healthz, /readyz, /metrics, and the HTTP API under /v1/ with --api-key-file) (default: ${default})."`
	Config    string        `env:"QUICPUSH_CONFIG" placeholder:"FILE" help:"YAML or JSON file whose keys are these flags' names (listen, data, log-level...)."`
	LogLevel  string        `default:"info" enum:"debug,info,warn,error" env:"QUICPUSH_LOG_LEVEL" help:"Log level: debug, info, warn, error."`
	LogFormat string        `default:"text" enum:"text,json" env:"QUICPUSH_LOG_FORMAT" help:"Log format on stderr: text or json."`
	Heartbeat time.Duration `default:"15s" env:"QUICPUSH_HEARTBEAT" placeholder:"D" help:"How often clients send a heartbeat (idle connections close after 3x): shorter notices dead paths and restarted servers sooner, longer saves phone batteries; 15 s keeps most NAT mappings alive (default: ${default})."`

	WebOrigins []string `name:"web-origin" env:"QUICPUSH_WEB_ORIGIN" placeholder:"ORIGIN" help:"Web pages allowed to connect over WebTransport, as browsers send them in the Origin header (e.g. https://class.example.com; * allows any). Default: the admin server's own origin, where the demo classroom is served."`

	JWTSecretFile      string   `name:"jwt-secret-file" xor:"jwt" env:"QUICPUSH_JWT_SECRET_FILE" placeholder:"FILE" help:"Accept only clients whose token is a JWT signed with HS256 and the secret in FILE (at least 32 bytes; trailing white space is ignored). Without this or --jwt-public-key: dev mode, any client is accepted and its token is its user name."`
	JWTPublicKey       string   `name:"jwt-public-key" xor:"jwt" env:"QUICPUSH_JWT_PUBLIC_KEY" placeholder:"FILE" help:"Accept only clients whose token is a JWT signed with EdDSA (or RS256) and verified by the PEM public key in FILE."`
	RoomPublisherRoles []string `name:"room-publisher-roles" default:"teacher,admin" env:"QUICPUSH_ROOM_PUBLISHER_ROLES" placeholder:"ROLE" help:"With a JWT flag: the token roles that may publish reliable messages to room/** channels (default: ${default})."`
	APIKeyFile         string   `name:"api-key-file" env:"QUICPUSH_API_KEY_FILE" placeholder:"FILE" help:"Serve the HTTP API for backends under /v1/ on --admin, to requests with the header Authorization: Bearer <the key in FILE> (at least 16 bytes). Without it the API is off."`
	PrintConfig        bool     `name:"print-config" help:"Print the settings in effect (from the flags, the environment, --config and the defaults) as one JSON object, which can serve as a --config file, and exit."`
}

// notSettings are the flags that are no setting of the server: --print-config
// leaves them out, and a --config file may not hold them.
var notSettings = []string{"help", "config", "print-config"}

// BeforeResolve loads the --config file (given as a flag or in
// QUICPUSH_CONFIG; kong.ConfigFlag would miss the latter) before kong
// resolves the flags not set on the command line.
func (f *flags) BeforeResolve(ctx *kong.Context) error {
	for _, fl := range ctx.Flags() {
		if fl.Name != "config" {
			continue
		}
		path, _ := ctx.FlagValue(fl).(string)
		if path == "" {
			return nil
		}
		file, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		defer file.Close()
		r, err := loadConfig(path, file)
		if err != nil {
			return err
		}
		ctx.AddResolver(r)
	}
	return nil
}

// configResolver resolves flags from a decoded config file.
type configResolver struct {
	path   string
	values map[string]any
}

func loadConfig(path string, r io.Reader) (*configResolver, error) {
	values := map[string]any{}
	// JSON is YAML too.
	if err := yaml.NewDecoder(r).Decode(&values); err != nil && err != io.EOF {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	return &configResolver{path: path, values: values}, nil
}

// Validate rejects keys that are no flag, so that a typo is not ignored.
func (c *configResolver) Validate(app *kong.Application) error {
	var known []string
	for _, f := range app.Flags {
		if !slices.Contains(notSettings, f.Name) {
			known = append(known, f.Name)
		}
	}
	var unknown []string
	for k := range c.values {
		if !slices.Contains(known, k) {
			unknown = append(unknown, fmt.Sprintf("%q", k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("--config %s: unknown key %s (keys are the flag names: %s)", c.path, strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	return nil
}

// Resolve gives the file's value for flag, unless the environment sets it:
// the environment overrides the file. An empty string is no value, as
// --print-config writes unset flags (and kong would count it as set for
// --cert's "and" or the JWT flags' "xor").
func (c *configResolver) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	for _, env := range flag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return nil, nil
		}
	}
	if v := c.values[flag.Name]; v != "" {
		return v, nil
	}
	return nil, nil
}

// printConfig writes the settings in effect as one JSON line, keyed by flag
// name like a --config file. Secrets appear as the paths of their files.
func printConfig(w io.Writer, kctx *kong.Context) error {
	settings := map[string]any{}
	for _, fl := range kctx.Flags() {
		if slices.Contains(notSettings, fl.Name) {
			continue
		}
		v := kctx.FlagValue(fl)
		if d, ok := v.(time.Duration); ok {
			v = d.String() // as a person writes it, not nanoseconds
		}
		if l, ok := v.([]string); ok && l == nil {
			v = []string{} // a list, even when empty
		}
		settings[fl.Name] = v
	}
	return json.NewEncoder(w).Encode(settings)
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // kong's enum has checked it
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

module github.com/quicpush/quicpush

go 1.26.0

require (
	github.com/alecthomas/kong v1.17.0
	github.com/quic-go/quic-go v0.64.1
	github.com/stretchr/testify v1.12.1
	golang.org/x/time v0.16.0
	google.golang.org/protobuf v1.36.12
)

require (
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

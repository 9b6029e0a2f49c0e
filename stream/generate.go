package stream

// Regenerate quicpushpb from quicpush.proto (needs protoc: apt-get install protobuf-compiler).
// protoc-gen-go is built from the protobuf version pinned in go.mod.
//go:generate sh -c "go build -o \"$(go env GOPATH)/bin/protoc-gen-go\" google.golang.org/protobuf/cmd/protoc-gen-go && PATH=\"$(go env GOPATH)/bin:$PATH\" protoc --go_out=. --go_opt=module=github.com/quicpush/quicpush/stream quicpush.proto"

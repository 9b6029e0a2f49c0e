package stream

// Regenerate quicpushpb from quicpush.proto (needs protoc: apt-get install protobuf-compiler).
// protoc-gen-go and protoc-gen-go-vtproto (fast marshalling without reflection, for the hot
// paths) are built from the versions pinned in go.mod.
//go:generate sh -c "go build -o \"$(go env GOPATH)/bin/protoc-gen-go\" google.golang.org/protobuf/cmd/protoc-gen-go && go build -o \"$(go env GOPATH)/bin/protoc-gen-go-vtproto\" github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto && PATH=\"$(go env GOPATH)/bin:$PATH\" protoc --go_out=. --go_opt=module=github.com/quicpush/quicpush/stream --go-vtproto_out=. --go-vtproto_opt=module=github.com/quicpush/quicpush/stream,features=unmarshal_unsafe quicpush.proto"

//go:build unix

package chaos

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestWhole(t *testing.T) {
	peer := func(name string, current, offline bool) *jetstream.PeerInfo {
		return &jetstream.PeerInfo{Name: name, Current: current, Offline: offline}
	}
	for _, c := range []struct {
		name string
		info jetstream.StreamInfo
		want bool
	}{
		{"one server, no cluster info", jetstream.StreamInfo{}, false},
		{"no leader", jetstream.StreamInfo{Cluster: &jetstream.ClusterInfo{Replicas: []*jetstream.PeerInfo{peer("b", true, false), peer("c", true, false)}}}, false},
		{"leader and two current replicas", jetstream.StreamInfo{Cluster: &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", true, false), peer("c", true, false)}}}, true},
		{"a replica still catching up", jetstream.StreamInfo{Cluster: &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", true, false), peer("c", false, false)}}}, false},
		{"a replica offline", jetstream.StreamInfo{Cluster: &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", true, false), peer("c", true, true)}}}, false},
		{"a replica missing", jetstream.StreamInfo{Cluster: &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", true, false)}}}, false},
	} {
		if got := whole(&c.info, 3); got != c.want {
			t.Errorf("%s: whole = %v, want %v", c.name, got, c.want)
		}
	}
}

package benchharness

import (
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseListenInodes(t *testing.T) {
	// /proc/net/tcp: 127.0.0.1:4222 (0x107E) listening, a connection to it,
	// and 0.0.0.0:5432 (0x1538) listening; a tcp6 listener on :::4222.
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:107E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D2F4 0100007F:107E 01 00000000:00000000 00:00000000 00000000     0        0 34567 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   110        0 45678 1 0000000000000000 100 0 0 10 0
`
	if got := parseListenInodes(tcp, map[int]bool{4222: true}); !slices.Equal(got, []uint64{23456}) {
		t.Errorf("port 4222: inodes %v, want [23456] (the listener, not the connection)", got)
	}
	if got := parseListenInodes(tcp, map[int]bool{4222: true, 5432: true}); !slices.Equal(got, []uint64{23456, 45678}) {
		t.Errorf("ports 4222, 5432: inodes %v", got)
	}
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:107E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 56789 1 0000000000000000 100 0 0 10 0
`
	if got := parseListenInodes(tcp6, map[int]bool{4222: true}); !slices.Equal(got, []uint64{56789}) {
		t.Errorf("tcp6: inodes %v", got)
	}
	if got := parseListenInodes(tcp, map[int]bool{4223: true}); len(got) != 0 {
		t.Errorf("port 4223: inodes %v, want none", got)
	}
}

func TestLoopbackPorts(t *testing.T) {
	for url, want := range map[string][]int{
		"nats://127.0.0.1:4222":                    {4222},
		"nats://localhost:4333, nats://[::1]:4444": {4333, 4444},
		"127.0.0.1": {4222},
		"nats://nats.example.com:4222,nats://10.0.0.1": nil,
		"nats://user:pw@127.0.0.1:5222":                {5222},
	} {
		var got []int
		for p := range loopbackPorts(url) {
			got = append(got, p)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: ports %v, want %v", url, got, want)
		}
	}
}

// The harness finds a process listening on a loopback port: this test's
// own.
func TestListenerPIDsFindsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	pids := listenerPIDs(map[int]bool{port: true})
	if !slices.Contains(pids, os.Getpid()) {
		t.Errorf("listener on port %d: pids %v, want this process %d among them", port, pids, os.Getpid())
	}
}

func TestCPUSplitPerAndMedian(t *testing.T) {
	u := time.Microsecond
	run := CPUSplit{Go: 3000 * u, PG: 2000 * u, NATS: 1000 * u, GoMeasured: true, PGMeasured: true, NATSMeasured: true, Busy: 0.9}
	per := run.per(10)
	if per.Go != 300*u || per.PG != 200*u || per.NATS != 100*u || per.Total() != 600*u || per.Busy != 0.9 || !per.PGMeasured {
		t.Errorf("per 10: %+v", per)
	}
	if got := run.per(0); got.Measured() {
		t.Errorf("per 0: %+v, want nothing measured", got)
	}
	a := CPUSplit{Go: 100 * u, PG: 900 * u, Busy: 0.5, GoMeasured: true, PGMeasured: true}
	b := CPUSplit{Go: 200 * u, PG: 100 * u, Busy: 0.9, GoMeasured: true, PGMeasured: true}
	c := CPUSplit{Go: 300 * u, PG: 500 * u, Busy: 0.7, GoMeasured: true}
	m := medianCPU([]CPUSplit{a, b, c})
	// Each part's own median, not one run's.
	if m.Go != 200*u || m.PG != 500*u || m.Busy != 0.7 || !m.GoMeasured || m.PGMeasured || m.NATSMeasured {
		t.Errorf("median: %+v", m)
	}
	if got := per.brief(); got != "Go 300, PostgreSQL 200, NATS 100, total 600; machine 90% busy" {
		t.Errorf("brief: %q", got)
	}
}

func TestParsePgbench(t *testing.T) {
	out := `pgbench (15.10 (Debian 15.10-0+deb12u1))
transaction type: worker-floor.sql
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 4
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 11778
number of failed transactions: 0 (0.000%)
latency average = 1.018 ms
initial connection time = 12.345 ms
tps = 3926.123456 (without initial connection time)
`
	var res floorResult
	if err := parsePgbench([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.tps != 3926.123456 || res.transactions != 11778 {
		t.Errorf("tps %v, transactions %d", res.tps, res.transactions)
	}
	if err := parsePgbench([]byte(strings.Replace(out, "failed transactions: 0", "failed transactions: 3", 1)), &res); err == nil {
		t.Error("failed transactions accepted")
	}
	if err := parsePgbench([]byte(strings.Replace(out, "number of transactions actually processed: 11778\n", "", 1)), &res); err == nil {
		t.Error("output without the transactions line accepted")
	}
}

package natsconnect

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/nats-io/nats-server/v2/server"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func startServer(t *testing.T, opts server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

func TestTokenAuth(t *testing.T) {
	url := startServer(t, server.Options{Authorization: "s3cr3t-token"})
	ctx := context.Background()
	nc, err := Connect(ctx, Options{URL: url, Token: "s3cr3t-token"})
	if err != nil {
		t.Fatalf("right token: %v", err)
	}
	nc.Close()
	_, err = Connect(ctx, Options{URL: url, Token: "wr0ng-token"})
	if err == nil || strings.Contains(err.Error(), "wr0ng-token") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("wrong token: %v (want an error naming the server, not the token)", err)
	}
}

func TestUserPassword(t *testing.T) {
	url := startServer(t, server.Options{Username: "worker", Password: "p4ssw0rd"})
	nc, err := Connect(context.Background(), Options{URL: url, User: "worker", Password: "p4ssw0rd"})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if _, err := Connect(context.Background(), Options{URL: url, User: "worker", Password: "nope-nope"}); err == nil || strings.Contains(err.Error(), "nope-nope") {
		t.Fatalf("wrong password: %v", err)
	}
}

// TLS with a private CA: the server's certificate verifies against the CA
// file, and without the CA the connection is refused.
func TestTLSWithCA(t *testing.T) {
	dir := t.TempDir()
	caPEM, serverCert := testCerts(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	url := startServer(t, server.Options{TLS: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}})
	url = strings.Replace(url, "nats://", "tls://", 1)
	nc, err := Connect(context.Background(), Options{URL: url, CAFile: caFile})
	if err != nil {
		t.Fatalf("TLS with the CA: %v", err)
	}
	if !nc.TLSRequired() {
		t.Fatal("connection is not TLS")
	}
	nc.Close()
	if _, err := Connect(context.Background(), Options{URL: url}); err == nil {
		t.Fatal("TLS without the CA succeeded")
	}
}

func TestValidateAndRedact(t *testing.T) {
	for name, o := range map[string]Options{
		"no url":             {},
		"two auth methods":   {URL: "nats://x", Token: "t", User: "u", Password: "p"},
		"user no password":   {URL: "nats://x", User: "u"},
		"cert without key":   {URL: "nats://x", CertFile: "c"},
		"missing creds file": {URL: "nats://x", CredsFile: "/nonexistent/x.creds"},
		"scheme twice":       {URL: "nats://nats://10.0.0.1:4222"},
		"scheme twice, list": {URL: "nats://h1:4222,nats://nats://h2:4222"},
		"empty port":         {URL: "nats://h1:"},
		"bad port":           {URL: "h1:99999"},
		"no host":            {URL: "nats://:4222"},
		"negative ping":      {URL: "nats://x", PingInterval: -time.Second},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, ok := range []string{"nats://x", "x:4222", "nats://u:pw@h1:4222, tls://h2:4443", "ws://h:8080/nats", "nats://[::1]:4222", "nats://h:4222/"} {
		if err := (Options{URL: ok}).Validate(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if err := (Options{URL: "nats://u:s3cr3t@nats://h"}).Validate(); err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "--nats-url") {
		t.Errorf("a bad URL with a password: %v; want an error naming the flag, without the password", err)
	}
	for in, want := range map[string]string{
		"nats://u:pw@host:4222": "nats://u:xxxxx@host:4222",
		"nats://tok@host:4222":  "nats://xxxxx@host:4222",
		"nats://host:4222":      "nats://host:4222",
		// every URL of a list, and one that does not parse
		"nats://u:pw@h1:4222,nats://u:pw@h2:4222": "nats://u:xxxxx@h1:4222,nats://u:xxxxx@h2:4222",
		"nats://tok@h1, nats://tok@h2":            "nats://xxxxx@h1, nats://xxxxx@h2",
		"nats://u:p%zz@host:4222":                 "nats://xxxxx@host:4222",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// testCerts makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCerts(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evsnap test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

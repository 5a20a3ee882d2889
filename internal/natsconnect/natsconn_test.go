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

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
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

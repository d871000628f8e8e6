package tlscert

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		serverName string
		wantDNS    string
		wantIP     string
	}{
		{serverName: "example.org", wantDNS: "example.org"},
		{serverName: "example.org:8448", wantDNS: "example.org"},
		{serverName: "127.0.0.1:8448", wantIP: "127.0.0.1"},
		{serverName: "[::1]:8448", wantIP: "::1"},
		{serverName: "[2001:db8::1]", wantIP: "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.serverName, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "tls", "c.crt"), filepath.Join(dir, "tls", "c.key")
			cert, created, err := LoadOrCreate(certPath, keyPath, tt.serverName, now)
			if err != nil || !created {
				t.Fatalf("LoadOrCreate = created %v, %v", created, err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantDNS != "" {
				if err := leaf.VerifyHostname(tt.wantDNS); err != nil || len(leaf.IPAddresses) != 0 {
					t.Errorf("DNS SANs %v IPs %v: %v", leaf.DNSNames, leaf.IPAddresses, err)
				}
			}
			if tt.wantIP != "" {
				if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP(tt.wantIP)) || len(leaf.DNSNames) != 0 {
					t.Errorf("IP SANs %v DNS %v, want %s", leaf.IPAddresses, leaf.DNSNames, tt.wantIP)
				}
			}
			if !leaf.NotBefore.Before(now) || !leaf.NotAfter.After(now.Add(365*24*time.Hour)) {
				t.Errorf("validity %v – %v", leaf.NotBefore, leaf.NotAfter)
			}
			if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key mode %v (%v), want 0600", fi.Mode().Perm(), err)
			}
			// A second start loads the same pair.
			again, created, err := LoadOrCreate(certPath, keyPath, tt.serverName, now)
			if err != nil || created {
				t.Fatalf("second LoadOrCreate = created %v, %v", created, err)
			}
			if string(again.Certificate[0]) != string(cert.Certificate[0]) {
				t.Error("second start made a new certificate")
			}
		})
	}
}

func TestLoadOrCreateHalfPair(t *testing.T) {
	t.Parallel()
	for _, keep := range []string{"cert", "key"} {
		t.Run("only "+keep, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
			if _, _, err := LoadOrCreate(certPath, keyPath, "example.org", time.Now()); err != nil {
				t.Fatal(err)
			}
			missingKey := "tls.key_path"
			if keep == "cert" {
				os.Remove(keyPath)
			} else {
				os.Remove(certPath)
				missingKey = "tls.cert_path"
			}
			_, _, err := LoadOrCreate(certPath, keyPath, "example.org", time.Now())
			if err == nil || !strings.HasPrefix(err.Error(), missingKey+":") {
				t.Fatalf("error %v, want one naming %s", err, missingKey)
			}
		})
	}
}

func TestLoadOrCreateGarbage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	os.WriteFile(certPath, []byte("not pem"), 0o600)
	os.WriteFile(keyPath, []byte("not pem"), 0o600)
	if _, _, err := LoadOrCreate(certPath, keyPath, "example.org", time.Now()); err == nil || !strings.Contains(err.Error(), "tls.cert_path") {
		t.Fatalf("error %v, want a tls.cert_path error", err)
	}
}

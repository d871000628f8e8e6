// Package tlscert loads the federation listener's certificate, making a
// self-signed one on first start so that federation works out of the box
// between servers that skip verification (private deployments, tests) or
// behind a TLS-terminating proxy.
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// validity of a generated certificate. Long, because nothing renews it:
// an operator who wants rotation installs a CA-issued pair instead.
const validity = 10 * 365 * 24 * time.Hour

// LoadOrCreate loads the PEM certificate and key at certPath and keyPath.
// When neither file exists it generates a self-signed ECDSA P-256 pair for
// serverName's host, writes both (the key with mode 0600) and reports
// created. When only one exists it fails, naming the missing one: a lone
// half is an operator's mistake that regenerating would hide.
func LoadOrCreate(certPath, keyPath, serverName string, now time.Time) (cert tls.Certificate, created bool, err error) {
	certExists, err := exists(certPath)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	switch {
	case certExists && keyExists:
		cert, err = tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return tls.Certificate{}, false, fmt.Errorf("tls.cert_path/tls.key_path: %w", err)
		}
		return cert, false, nil
	case certExists:
		return tls.Certificate{}, false, fmt.Errorf("tls.key_path: %s does not exist, but tls.cert_path %s does; restore the key or remove the certificate to generate a new pair", keyPath, certPath)
	case keyExists:
		return tls.Certificate{}, false, fmt.Errorf("tls.cert_path: %s does not exist, but tls.key_path %s does; restore the certificate or remove the key to generate a new pair", certPath, keyPath)
	}
	certPEM, keyPEM, err := Generate(serverName, now)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	// The key first: a crash in between leaves a lone key, which the next
	// start reports instead of silently pairing it with a new certificate.
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("tls.key_path: %w", err)
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("tls.cert_path: %w", err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return cert, err == nil, err
}

// Generate makes a self-signed certificate for the host part of
// serverName (a DNS name or an IP literal), PEM-encoded.
func Generate(serverName string, now time.Time) (certPEM, keyPEM []byte, err error) {
	host := hostOf(serverName)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-time.Hour), // tolerate peers whose clocks lag
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// hostOf strips the port from a server name; IPv6 literals lose their
// brackets too, since certificates carry bare addresses.
func hostOf(serverName string) string {
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(serverName, "["), "]")
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// writeNew creates path with mode, refusing to overwrite.
func writeNew(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

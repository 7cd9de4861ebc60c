package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// File names in a lab's state directory.
const (
	caFile    = "ca.pem"
	caKeyFile = "ca-key.pem"
	certDir   = "certs"
)

// certValidity is how long lab certificates are valid; a lab is meant to
// live for minutes or days, not years.
const certValidity = 30 * 24 * time.Hour

// leafSpec is one certificate the lab issues.
type leafSpec struct {
	name  string // DNS name; also the file name
	addrs []netip.Addr
}

// leaves lists every leaf certificate: one per lab name (with its
// addresses, so that https://192.0.2.10 verifies too) and the API server
// stand-in (with the firewall's public addresses it is published on).
func leaves() []leafSpec {
	var ls []leafSpec
	for _, n := range Names {
		ls = append(ls, leafSpec{name: n.Name, addrs: []netip.Addr{n.V4, n.V6}})
	}
	ls = append(ls, leafSpec{name: APIServerName, addrs: []netip.Addr{APIV4, APIV6, FWPublicV4, FWPublicV6}})
	// The ingress WAF's certificate (waf.go): the name only.
	ls = append(ls, leafSpec{name: StoreServerName})
	return ls
}

// writePKI generates the lab CA (ECDSA P-256) and every leaf certificate
// into dir.
func writePKI(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "clusterwall lab CA", Organization: []string{"clusterwall lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, caFile), "CERTIFICATE", caDER); err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, caKeyFile), caKey); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, certDir), 0o755); err != nil {
		return err
	}
	for _, l := range leaves() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: l.name},
			DNSNames:     []string{l.name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(certValidity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		for _, a := range l.addrs {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", l.name, err)
		}
		cert, keyPath := leafPaths(dir, l.name)
		if err := writePEM(cert, "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writeKey(keyPath, key); err != nil {
			return err
		}
	}
	return nil
}

func leafPaths(dir, name string) (cert, key string) {
	return filepath.Join(dir, certDir, name+".pem"), filepath.Join(dir, certDir, name+"-key.pem")
}

// loadLeaf loads the certificate the lab issued for name.
func loadLeaf(dir, name string) (tls.Certificate, error) {
	cert, key := leafPaths(dir, name)
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("lab certificate for %s: %w", name, err)
	}
	return c, nil
}

// CAPool returns a pool holding only the lab CA of the lab whose state
// directory is dir.
func CAPool(dir string) (*x509.CertPool, error) {
	data, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no certificate", filepath.Join(dir, caFile))
	}
	return pool, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

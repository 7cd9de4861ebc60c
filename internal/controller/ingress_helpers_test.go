package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// The Gateway API's CRDs (the standard channel of the module this
// controller is built with) are installed in the tests' API server too.
func init() {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return // the Gateway API tests fail on the missing kinds
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	if _, err := os.Stat(dir); err == nil {
		kubeEnv.CRDDirs = append(kubeEnv.CRDDirs, dir)
	}
}

// startIngressController runs a manager with the ingress controller (and
// its cache options) until the test ends.
func startIngressController(t *testing.T, cfg *rest.Config, opts IngressOptions) {
	t.Helper()
	s, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 s,
		Cache:                  IngressCacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.GatewayAPI && !GatewayAPIInstalled(mgr) {
		t.Fatal("the Gateway API CRDs are not installed in the test API server")
	}
	r := NewIngress(mgr.GetClient(), mgr.GetEventRecorderFor("clusterwall-ingress-test"), opts)
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
}

// testCA issues certificates for the tests' Secrets.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clusterwall test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for names whose subject's common name is cn
// (tests tell certificates apart by it), and its key, as PEM.
func (ca *testCA) issue(t testing.TB, cn string, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func (ca *testCA) secret(t testing.TB, ns, name, cn string, names ...string) *corev1.Secret {
	c, k := ca.issue(t, cn, names...)
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: c, corev1.TLSPrivateKeyKey: k}}
}

// podServer is an HTTP server in the lab's node namespace standing in for
// a pod: it answers with its name, and what it received, as JSON.
type podServer struct {
	name string
	addr string // ip:port
	srv  *http.Server
	// hold, when set, makes requests to /hold wait for it to be closed.
	hold chan struct{}
}

// podAnswer is what a podServer answers.
type podAnswer struct {
	Pod    string      `json:"pod"`
	Method string      `json:"method"`
	URI    string      `json:"uri"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
}

func startPod(t *testing.T, l *lab.Lab, name, addr string) *podServer {
	t.Helper()
	p := &podServer{name: name, addr: addr, hold: make(chan struct{})}
	var ln net.Listener
	if err := l.Do(lab.HostNode, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(200 * time.Millisecond) // in flight across route changes
		}
		if r.URL.Path == "/hold" {
			select {
			case <-p.hold:
			case <-time.After(20 * time.Second):
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(podAnswer{Pod: p.name, Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header})
	})}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// ingressClient sends requests from the lab's internet client
// (198.51.100.7) to the WAF's ingress address, whatever the URL's host: the
// URL's host is the Host header and the SNI name. TLS is verified against
// pool (and SNI) unless pool is nil.
type ingressClient struct {
	l    *lab.Lab
	pool *x509.CertPool
	ip   string // the ingress address
}

func (ic *ingressClient) client(keepAlive bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return ic.l.DialContext(lab.HostClient)(ctx, "tcp", net.JoinHostPort(ic.ip, port))
		},
		DisableKeepAlives: !keepAlive,
		TLSClientConfig:   &tls.Config{RootCAs: ic.pool, InsecureSkipVerify: ic.pool == nil},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// result is one request's outcome.
type result struct {
	status int
	pod    string
	body   string
	header http.Header
	cn     string // the served certificate's common name (HTTPS)
	err    error
}

func (r result) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return fmt.Sprintf("%d pod=%q cert=%q %.120s", r.status, r.pod, r.cn, r.body)
}

func (ic *ingressClient) do(c *http.Client, method, url string, hdr ...string) result {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (clusterwall test)")
	req.Header.Set("Accept", "*/*")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, body: string(body), header: resp.Header, err: err}
	var a podAnswer
	if json.Unmarshal(body, &a) == nil {
		r.pod = a.Pod
	}
	if resp.TLS != nil {
		r.cn = resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	return r
}

// waitFor polls until check(result) holds and returns how long it took.
func (ic *ingressClient) waitFor(t *testing.T, timeout time.Duration, what string, send func() result, ok func(result) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last result
	for time.Since(start) < timeout {
		if last = send(); ok(last) {
			d := time.Since(start)
			t.Logf("%s after %s", what, d.Round(time.Millisecond))
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s; last answer: %s", what, timeout, last)
	return 0
}

// --- objects ---

func ingressClass(name string, isDefault bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.IngressClassSpec{Controller: v1.IngressControllerName}}
	if isDefault {
		c.Annotations = map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}
	}
	return c
}

// service returns a Service with one TCP port 80 (named "http") and the
// EndpointSlice of its ready endpoints at addrs (ip:port).
func serviceWithEndpoints(ns, name string, addrs ...string) (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	return svc, endpointSlice(ns, name, name+"-1", addrs...)
}

func endpointSlice(ns, svc, name string, addrs ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4}
	setEndpoints(es, addrs...)
	return es
}

// setEndpoints makes addrs (ip:port, one port for all) the slice's ready
// endpoints.
func setEndpoints(es *discoveryv1.EndpointSlice, addrs ...string) {
	es.Endpoints = nil
	var port int32
	for _, a := range addrs {
		host, p, _ := net.SplitHostPort(a)
		fmt.Sscan(p, &port)
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	es.Ports = []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}}
}

func prefixPath(path, svc string) networkingv1.HTTPIngressPath {
	pt := networkingv1.PathTypePrefix
	return networkingv1.HTTPIngressPath{Path: path, PathType: &pt, Backend: networkingv1.IngressBackend{
		Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Name: "http"}}}}
}

func fmtJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestDeployManifests: every kustomization under deploy/ names files and
// directories that exist, the manifests decode into their Go types, and the
// in-cluster overlay's patch replaces the Deployment's --daemon argument.
func TestDeployManifests(t *testing.T) {
	root := filepath.Join("..", "..", "deploy")
	var kusts []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			kusts = append(kusts, p)
		}
		return nil
	})
	if len(kusts) < 6 {
		t.Fatalf("only %d kustomizations: %q", len(kusts), kusts)
	}
	for _, k := range kusts {
		data, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		var kz struct {
			Resources []string `json:"resources"`
		}
		if err := yaml.Unmarshal(data, &kz); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		for _, r := range kz.Resources {
			p := filepath.Join(filepath.Dir(k), r)
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: resource %s: %v", k, r, err)
				continue
			}
			if fi.IsDir() {
				if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
					t.Errorf("%s: directory %s has no kustomization.yaml", k, r)
				}
				continue
			}
			decodeManifests(t, p)
		}
	}
	objs := decodeManifests(t, filepath.Join(root, "controller", "deployment.yaml"))
	d, ok := objs[0].(*appsv1.Deployment)
	if !ok {
		t.Fatalf("deployment.yaml holds a %T", objs[0])
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	if len(args) < 5 || !strings.HasPrefix(args[4], "--daemon=") || args[0] != "controller" {
		t.Fatalf("the overlay patches args[4] as --daemon=; the Deployment's args are %q", args)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "clusterwall-controller" {
		t.Fatal("the Deployment does not run as the RBAC's ServiceAccount")
	}
}

// Package kubernetes holds the Kubernetes manifests of winrmd (the *.yaml
// files here). No cluster runs where the tests do, so this test decodes
// every manifest strictly into the official k8s.io/api types (an unknown or
// misspelt field fails) and checks what a cluster would only tell at
// deploy time: required fields, selectors that match, references that
// resolve, probes, scrape annotations, and that the winrmd configurations
// in the ConfigMap pass winrmd's own configuration check.
package kubernetes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/winrmd/winrmd/configs"
)

type objects struct {
	namespaces  []corev1.Namespace
	secrets     map[string]corev1.Secret
	configMaps  map[string]corev1.ConfigMap
	services    []corev1.Service
	daemonSets  []appsv1.DaemonSet
	deployments []appsv1.Deployment
}

// strict decodes one YAML document into out as the API server does
// (sigs.k8s.io/json, case-sensitive), refusing unknown, misspelt (hostPid
// for hostPID: encoding/json would accept it) and duplicate fields.
func strict(doc any, out any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	serrs, err := sigsjson.UnmarshalStrict(b, out)
	if err != nil {
		return err
	}
	return errors.Join(serrs...)
}

func load(t *testing.T) objects {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	o := objects{secrets: map[string]corev1.Secret{}, configMaps: map[string]corev1.ConfigMap{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if doc == nil {
				continue
			}
			where := fmt.Sprintf("%s document %d (%v)", f, i, doc["kind"])
			var err error
			switch fmt.Sprint(doc["apiVersion"], " ", doc["kind"]) {
			case "v1 Namespace":
				var x corev1.Namespace
				err = strict(doc, &x)
				o.namespaces = append(o.namespaces, x)
			case "v1 Secret":
				var x corev1.Secret
				err = strict(doc, &x)
				o.secrets[x.Name] = x
			case "v1 ConfigMap":
				var x corev1.ConfigMap
				err = strict(doc, &x)
				o.configMaps[x.Name] = x
			case "v1 Service":
				var x corev1.Service
				err = strict(doc, &x)
				o.services = append(o.services, x)
			case "apps/v1 DaemonSet":
				var x appsv1.DaemonSet
				err = strict(doc, &x)
				o.daemonSets = append(o.daemonSets, x)
			case "apps/v1 Deployment":
				var x appsv1.Deployment
				err = strict(doc, &x)
				o.deployments = append(o.deployments, x)
			default:
				t.Errorf("%s: unexpected apiVersion/kind", where)
				continue
			}
			if err != nil {
				t.Errorf("%s: strict decode: %v", where, err)
			}
		}
	}
	return o
}

func TestManifests(t *testing.T) {
	o := load(t)
	if len(o.namespaces) != 1 || o.namespaces[0].Name != "winrmd" {
		t.Fatalf("want one namespace winrmd, got %v", o.namespaces)
	}
	if len(o.daemonSets) != 1 || len(o.deployments) != 1 {
		t.Fatalf("want one DaemonSet and one Deployment (the sidecar example), got %d and %d", len(o.daemonSets), len(o.deployments))
	}
	if s, ok := o.secrets["winrmd-tls"]; !ok || s.Type != corev1.SecretTypeTLS || s.StringData["tls.crt"] == "" || s.StringData["tls.key"] == "" {
		t.Errorf("winrmd-tls: a kubernetes.io/tls secret with tls.crt and tls.key: %+v", s)
	}
	if s, ok := o.secrets["winrmd-accounts"]; !ok || s.StringData["accounts"] == "" {
		t.Errorf("winrmd-accounts: a secret with the key accounts")
	}
	for _, cm := range o.configMaps {
		checkMeta(t, "ConfigMap", &cm.ObjectMeta)
	}
	for _, s := range o.secrets {
		checkMeta(t, "Secret", &s.ObjectMeta)
	}

	ds := o.daemonSets[0]
	checkMeta(t, "DaemonSet", &ds.ObjectMeta)
	checkSelector(t, "DaemonSet "+ds.Name, ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
	ps := ds.Spec.Template.Spec
	if !ps.HostNetwork || !ps.HostPID || !ps.HostIPC {
		t.Errorf("DaemonSet: host namespaces: network %v pid %v ipc %v", ps.HostNetwork, ps.HostPID, ps.HostIPC)
	}
	cfg := checkPod(t, o, "DaemonSet "+ds.Name, ds.Spec.Template)
	if cfg != nil && cfg.Sidecar.Target != "1" {
		t.Errorf("DaemonSet: the node configuration must target the host's pid 1 (hostPID), not %q", cfg.Sidecar.Target)
	}

	dep := o.deployments[0]
	checkMeta(t, "Deployment", &dep.ObjectMeta)
	checkSelector(t, "Deployment "+dep.Name, dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	dps := dep.Spec.Template.Spec
	if dps.ShareProcessNamespace == nil || !*dps.ShareProcessNamespace {
		t.Errorf("sidecar example: shareProcessNamespace must be true")
	}
	cfg = checkPod(t, o, "Deployment "+dep.Name, dep.Spec.Template)
	if cfg != nil {
		var names []string
		for _, c := range dps.Containers {
			if c.Name != "winrmd" {
				names = append(names, c.Name)
			}
		}
		if !slices.Contains(names, cfg.Sidecar.Target) {
			t.Errorf("sidecar example: target %q is none of the other containers %v", cfg.Sidecar.Target, names)
		}
	}

	// Every Service selects a workload and names ports it has.
	for _, svc := range o.services {
		checkMeta(t, "Service", &svc.ObjectMeta)
		var tmpl *corev1.PodTemplateSpec
		for _, p := range []corev1.PodTemplateSpec{ds.Spec.Template, dep.Spec.Template} {
			if len(svc.Spec.Selector) > 0 && subset(svc.Spec.Selector, p.Labels) {
				tmpl = &p
				break
			}
		}
		if tmpl == nil {
			t.Errorf("Service %s selects no workload (%v)", svc.Name, svc.Spec.Selector)
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Port == 0 || sp.Name == "" {
				t.Errorf("Service %s: port needs a name and a number: %+v", svc.Name, sp)
			}
			if !hasPort(tmpl.Spec.Containers, sp.TargetPort.String()) {
				t.Errorf("Service %s: targetPort %s is no container port", svc.Name, sp.TargetPort.String())
			}
		}
	}
}

func checkMeta(t *testing.T, kind string, m metaLike) {
	t.Helper()
	if m.GetName() == "" || m.GetNamespace() != "winrmd" {
		t.Errorf("%s %q: needs a name and namespace winrmd (has %q)", kind, m.GetName(), m.GetNamespace())
	}
}

type metaLike interface {
	GetName() string
	GetNamespace() string
}

func checkSelector(t *testing.T, what string, sel, labels map[string]string) {
	t.Helper()
	if len(sel) == 0 || !subset(sel, labels) {
		t.Errorf("%s: selector %v does not match the template's labels %v", what, sel, labels)
	}
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func hasPort(cs []corev1.Container, name string) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Name == name || strconv.Itoa(int(p.ContainerPort)) == name {
				return true
			}
		}
	}
	return false
}

// checkPod checks the winrmd container of a pod template and returns its
// configuration, parsed and validated by winrmd's own loader.
func checkPod(t *testing.T, o objects, what string, tmpl corev1.PodTemplateSpec) *configs.Config {
	t.Helper()
	var w *corev1.Container
	for i, c := range tmpl.Spec.Containers {
		if c.Name == "" || c.Image == "" {
			t.Errorf("%s: container %d needs a name and an image", what, i)
		}
		if c.Name == "winrmd" {
			w = &tmpl.Spec.Containers[i]
		}
	}
	if w == nil {
		t.Errorf("%s: no winrmd container", what)
		return nil
	}
	for _, p := range []*corev1.Probe{w.LivenessProbe, w.ReadinessProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) < 2 || p.Exec.Command[0] != "/usr/sbin/winrmd" || p.Exec.Command[1] != "probe" {
			t.Errorf("%s: liveness and readiness probes must be `winrmd probe` (an anonymous Identify): %+v", what, p)
		} else if p.TimeoutSeconds <= 5 {
			t.Errorf("%s: probe timeoutSeconds %d must exceed winrmd probe's own 5 s", what, p.TimeoutSeconds)
		}
	}
	if !slices.Equal(w.Args, []string{"serve", "--config", "/etc/winrmd/winrmd.yaml"}) {
		t.Errorf("%s: winrmd args %v", what, w.Args)
	}
	// Volumes: every mount names a volume; every volume's source exists.
	vols := map[string]corev1.Volume{}
	for _, v := range tmpl.Spec.Volumes {
		vols[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			if _, ok := o.configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("%s: volume %s: no ConfigMap %s", what, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if _, ok := o.secrets[v.Secret.SecretName]; !ok {
				t.Errorf("%s: volume %s: no Secret %s", what, v.Name, v.Secret.SecretName)
			}
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0 {
				t.Errorf("%s: secret volume %s must be readable by its owner only", what, v.Name)
			}
		}
	}
	var cfg *configs.Config
	for _, m := range w.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("%s: mount %s names no volume", what, m.Name)
			continue
		}
		if m.MountPath == "/etc/winrmd/winrmd.yaml" {
			if v.ConfigMap == nil || m.SubPath == "" {
				t.Errorf("%s: the configuration must be a ConfigMap key (subPath)", what)
				continue
			}
			text, ok := o.configMaps[v.ConfigMap.Name].Data[m.SubPath]
			if !ok {
				t.Errorf("%s: ConfigMap %s has no key %s", what, v.ConfigMap.Name, m.SubPath)
				continue
			}
			c, err := configs.Parse([]byte(text))
			if err != nil {
				t.Errorf("%s: configuration %s: %v", what, m.SubPath, err)
				continue
			}
			cfg = c
		}
	}
	if cfg == nil {
		t.Errorf("%s: no configuration mounted at /etc/winrmd/winrmd.yaml", what)
		return nil
	}
	// What the configuration reads must be mounted.
	mounted := func(path string) bool {
		for _, m := range w.VolumeMounts {
			if strings.HasPrefix(path, m.MountPath+"/") {
				return true
			}
		}
		return false
	}
	for _, l := range cfg.Listeners {
		if l.Transport == "https" && (!mounted(l.CertFile) || !mounted(l.KeyFile)) {
			t.Errorf("%s: %s/%s are not mounted", what, l.CertFile, l.KeyFile)
		}
		if !hasPort([]corev1.Container{*w}, strconv.Itoa(l.Port)) {
			t.Errorf("%s: listener port %d is not a container port", what, l.Port)
		}
	}
	if cfg.Accounts.StoreFile != "" && !mounted(cfg.Accounts.StoreFile) {
		t.Errorf("%s: the account store %s is not mounted", what, cfg.Accounts.StoreFile)
	}
	// Prometheus scrape annotations point at the metrics listener.
	a := tmpl.Annotations
	_, mport, _ := strings.Cut(cfg.Metrics.Address, ":")
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" || a["prometheus.io/port"] != mport || !hasPort([]corev1.Container{*w}, mport) {
		t.Errorf("%s: scrape annotations %v do not match metrics.address %s", what, a, cfg.Metrics.Address)
	}
	if cfg.Sidecar.Target == "" {
		t.Errorf("%s: the configuration is not in sidecar mode", what)
	}
	return cfg
}

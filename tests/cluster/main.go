// Command wasmlet-cluster is the multi-call binary of wasmlet's test control plane: the real
// Kubernetes components of k8s.io/kubernetes, plus an embedded etcd and CoreDNS, linked into
// one binary so that the shared dependencies are compiled and linked once.
//
// It dispatches on the name it was called by (a symlink such as kubectl -> wasmlet-cluster)
// or, when called by its own name, on its first argument:
//
//	wasmlet-cluster kube-apiserver --etcd-servers=...
//	kubectl get pods
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// components maps a component name to its entry point. Each entry point sees os.Args as if
// it were its own binary (os.Args[0] is the component name), and returns an exit code.
var components = map[string]func() int{
	"etcd":                    runEtcd,
	"kube-apiserver":          runAPIServer,
	"kube-controller-manager": runControllerManager,
	"kube-scheduler":          runScheduler,
	"kube-proxy":              runProxy,
	"kubelet":                 runKubelet,
	"kubectl":                 runKubectl,
	"coredns":                 runCoreDNS,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := components[name]; !ok {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		// Called by our own name: shift the component name into argv[0], which is where
		// kubectl (plugin lookup) and cobra (usage text) expect it.
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "wasmlet-cluster: unknown component %q\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(run())
}

func usage() {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: wasmlet-cluster {%s} [ARGS...]\n", strings.Join(names, "|"))
}

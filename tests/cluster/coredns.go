package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins a cluster's Corefile needs, registered by their init functions. CoreDNS's
	// own binary links all of them (cloud DNS back-ends included); the test cluster serves
	// cluster.local from the API server and nothing else.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order in which the plugins handle a query, as CoreDNS's plugin.cfg orders them.
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "cache", "kubernetes"}
}

// runCoreDNS runs CoreDNS (`coredns -conf Corefile`) until it is stopped.
func runCoreDNS() int {
	coremain.Run()
	return 0
}

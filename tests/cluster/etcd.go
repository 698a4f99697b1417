package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd starts an embedded etcd member configured by etcd's own YAML config file
// (the format of `etcd --config-file`), and serves until SIGTERM/SIGINT or a server error.
func runEtcd() int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	configFile := fs.String("config-file", "", "etcd YAML configuration file (required)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *configFile == "" {
		fmt.Fprintln(os.Stderr, "etcd: --config-file is required")
		return 2
	}
	cfg, err := embed.ConfigFromFile(*configFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
	return serveEtcd(cfg)
}

func serveEtcd(cfg *embed.Config) int {
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-stop:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", sig)
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}

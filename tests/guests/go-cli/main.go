// A WASI preview 1 command built by the Go toolchain (GOOS=wasip1 GOARCH=wasm): it prints its
// arguments and environment, then runs the operations its arguments name, in order:
//
//	cat PATH          print the file at PATH
//	write PATH TEXT   write TEXT (and a newline) to the file at PATH
//	exit CODE         exit with CODE
//
// Any other argument is only printed.
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
)

func main() {
	args := os.Args[1:]
	fmt.Printf("args: %q\n", args)
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		fmt.Printf("env: %s\n", kv)
	}
	for len(args) > 0 {
		args = run(args)
	}
}

// run performs the operation at the start of args and returns the arguments after it.
func run(args []string) []string {
	switch {
	case args[0] == "cat" && len(args) > 1:
		data, err := os.ReadFile(args[1])
		check(err)
		fmt.Printf("cat %s: %s", args[1], data)
		return args[2:]
	case args[0] == "write" && len(args) > 2:
		check(os.WriteFile(args[1], []byte(args[2]+"\n"), 0o644))
		fmt.Printf("wrote %s\n", args[1])
		return args[3:]
	case args[0] == "exit" && len(args) > 1:
		code, err := strconv.Atoi(args[1])
		check(err)
		os.Exit(code)
	}
	return args[1:]
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-cli:", err)
		os.Exit(1)
	}
}

module wasmlet.test/guests/go-cli

go 1.24

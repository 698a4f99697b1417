;; hello: the first program wasmlet runs.
;;
;; Prints `hello from stdout!` on stdout, `hello from stderr!` on stderr, then
;; `Args are: [...]` on stdout, listing the arguments after the program name
;; (`Args are: []` with none, `Args are: ["a", "b"]` with two).
;;
;; Run it: cargo run --release -p wasmlet -- run examples/hello/hello.wat
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; 0..16: iovec and scratch. 64..: constant strings.
  ;; 4096..: argv pointers. 8192..: argument bytes (up to 56 KiB).
  (data (i32.const 64) "hello from stdout!\n")   ;; 19 bytes
  (data (i32.const 96) "hello from stderr!\n")   ;; 19 bytes
  (data (i32.const 128) "Args are: [")           ;; 11 bytes
  (data (i32.const 144) "]\n")                   ;; 2 bytes
  (data (i32.const 148) "\"")                    ;; 1 byte
  (data (i32.const 152) ", ")                    ;; 2 bytes

  ;; write(fd, ptr, len): writes the bytes, looping over partial writes.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (br_if $done
          (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $end
      (loop $next
        (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func (export "_start")
    (local $argc i32) (local $i i32) (local $arg i32)
    (call $write (i32.const 1) (i32.const 64) (i32.const 19))
    (call $write (i32.const 2) (i32.const 96) (i32.const 19))
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (local.set $argc (i32.load (i32.const 16)))
    (if (i32.gt_u (i32.load (i32.const 20)) (i32.const 57344))
      (then (local.set $argc (i32.const 0))))
    (if (i32.gt_u (local.get $argc) (i32.const 1024))
      (then (local.set $argc (i32.const 0))))
    (if (local.get $argc)
      (then (drop (call $args_get (i32.const 4096) (i32.const 8192)))))
    (call $write (i32.const 1) (i32.const 128) (i32.const 11))
    (local.set $i (i32.const 1))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $argc)))
        (if (i32.gt_u (local.get $i) (i32.const 1))
          (then (call $write (i32.const 1) (i32.const 152) (i32.const 2))))
        (local.set $arg
          (i32.load (i32.add (i32.const 4096) (i32.shl (local.get $i) (i32.const 2)))))
        (call $write (i32.const 1) (i32.const 148) (i32.const 1))
        (call $write (i32.const 1) (local.get $arg) (call $strlen (local.get $arg)))
        (call $write (i32.const 1) (i32.const 148) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write (i32.const 1) (i32.const 144) (i32.const 2))))

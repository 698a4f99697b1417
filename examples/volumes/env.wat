;; env: prints each argument as `arg=VALUE` and each environment variable as `env=K=V`.
;; The same program as the `env` test fixture (crates/fixtures/wat: prelude + body);
;; a CLI test checks that both compile to the same bytes.
(module
  ;; Shared prelude of the fixtures: WASI imports and small helpers.
  ;; Memory map: 0..64 scratch (iovecs, out-params), 64..1024 each program's
  ;; strings, 1024..4096 I/O buffer, 4096.. argv pointers, 8192.. argv bytes,
  ;; 40960.. environ pointers, 49152.. environ bytes.
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name"
    (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 1)
  (global $argc (mut i32) (i32.const 0))
  (data (i32.const 60) "\n")

  ;; write(fd, ptr, len): writes all bytes, looping over partial writes.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (local $err i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (local.set $err
          (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (if (local.get $err) (then (call $proc_exit (local.get $err))))
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

  ;; puts(fd, cstr): writes a NUL-terminated string.
  (func $puts (param $fd i32) (param $p i32)
    (call $write (local.get $fd) (local.get $p) (call $strlen (local.get $p))))

  (func $newline (param $fd i32)
    (call $write (local.get $fd) (i32.const 60) (i32.const 1)))

  ;; args() -> argc: loads argv into memory (at most 1024 args, 32 KiB).
  (func $args (result i32)
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (if (i32.gt_u (i32.load (i32.const 20)) (i32.const 32768)) (then unreachable))
    (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 1024)) (then unreachable))
    (global.set $argc (i32.load (i32.const 16)))
    (drop (call $args_get (i32.const 4096) (i32.const 8192)))
    (global.get $argc))

  ;; arg(i) -> pointer to the NUL-terminated argument i (call $args first).
  (func $arg (param $i i32) (result i32)
    (i32.load (i32.add (i32.const 4096) (i32.shl (local.get $i) (i32.const 2)))))

  ;; atoi(p): decimal digits to a number (stops at the first non-digit).
  (func $atoi (param $p i32) (result i32)
    (local $n i32) (local $c i32)
    (block $end
      (loop $next
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $end (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $c)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; env: prints each argument as `arg=VALUE` and each variable as `env=K=V`.
  (data (i32.const 64) "arg=\00")
  (data (i32.const 72) "env=\00")
  (func (export "_start")
    (local $n i32) (local $i i32)
    (local.set $n (call $args))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (call $puts (i32.const 1) (i32.const 64))
        (call $puts (i32.const 1) (call $arg (local.get $i)))
        (call $newline (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (if (i32.gt_u (i32.load (i32.const 20)) (i32.const 16384)) (then unreachable))
    (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 2048)) (then unreachable))
    (local.set $n (i32.load (i32.const 16)))
    (drop (call $environ_get (i32.const 40960) (i32.const 49152)))
    (local.set $i (i32.const 0))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (call $puts (i32.const 1) (i32.const 72))
        (call $puts (i32.const 1)
          (i32.load (i32.add (i32.const 40960) (i32.shl (local.get $i) (i32.const 2)))))
        (call $newline (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

)

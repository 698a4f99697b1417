;; fs: `fs read PATH` prints a file; `fs write PATH CONTENT` writes one and prints `wrote`;
;; `fs link TARGET PATH` makes PATH a symbolic link and prints `linked`.
;; Paths are relative to the first mounted directory. On a WASI error it exits with the errno.
;; The same program as the `fs` test fixture (crates/fixtures/wat: prelude + body);
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

  ;; fs read PATH | fs write PATH CONTENT | fs link TARGET PATH: reads PATH (to
  ;; stdout), writes CONTENT to PATH, or makes PATH a symbolic link to TARGET
  ;; (printing `linked`), relative to the first preopened directory, as a guest
  ;; that tries any path it is given. The first preopen is found as libc finds
  ;; preopens, by their names: the first descriptor from 3 up that is one, other
  ;; than a root `/` some hosts preopen as well (wasmer's WASI). On a WASI error it prints
  ;; `wasi error` on stderr and exits with the errno as its code.
  (data (i32.const 64) "wasi error\n")
  (data (i32.const 160) "usage: fs read PATH | fs write PATH CONTENT | fs link TARGET PATH\n")
  (data (i32.const 128) "wrote\n")
  (data (i32.const 136) "linked\n")

  (global $dir (mut i32) (i32.const 3))

  ;; Sets $dir to the first preopened directory not named `/`.
  (func $first_dir
    (local $fd i32)
    (local.set $fd (i32.const 3))
    (block $found
      (loop $next
        (br_if $found (i32.ge_u (local.get $fd) (i32.const 64)))
        (if (i32.eqz (call $fd_prestat_get (local.get $fd) (i32.const 48)))
          (then
            (if (i32.ne (i32.load (i32.const 52)) (i32.const 1))
              (then (global.set $dir (local.get $fd)) (br $found)))
            (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 56) (i32.const 1)))
            (if (i32.ne (i32.load8_u (i32.const 56)) (i32.const 47))
              (then (global.set $dir (local.get $fd)) (br $found)))))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $next))))

  (func $check (param $errno i32)
    (if (local.get $errno)
      (then
        (call $write (i32.const 2) (i32.const 64) (i32.const 11))
        (call $proc_exit (local.get $errno)))))

  ;; open(path, oflags, rights) -> fd, following symlinks as a libc would.
  (func $open (param $path i32) (param $oflags i32) (param $rights i64) (result i32)
    (call $check
      (call $path_open (global.get $dir) (i32.const 1) (local.get $path)
        (call $strlen (local.get $path)) (local.get $oflags) (local.get $rights)
        (i64.const 0) (i32.const 0) (i32.const 24)))
    (i32.load (i32.const 24)))

  (func $read (param $path i32)
    (local $fd i32)
    (local.set $fd (call $open (local.get $path) (i32.const 0) (i64.const 2)))
    (block $eof
      (loop $more
        (i32.store (i32.const 32) (i32.const 1024))
        (i32.store (i32.const 36) (i32.const 3072))
        (call $check
          (call $fd_read (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 40)))
        (br_if $eof (i32.eqz (i32.load (i32.const 40))))
        (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 40)))
        (br $more)))
    (call $check (call $fd_close (local.get $fd))))

  (func $write_file (param $path i32) (param $content i32)
    (local $fd i32)
    ;; oflags: creat | trunc; rights: fd_write.
    (local.set $fd (call $open (local.get $path) (i32.const 9) (i64.const 64)))
    (i32.store (i32.const 32) (local.get $content))
    (i32.store (i32.const 36) (call $strlen (local.get $content)))
    (call $check (call $fd_write (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $check (call $fd_close (local.get $fd)))
    (call $write (i32.const 1) (i32.const 128) (i32.const 6)))

  (func $link (param $target i32) (param $path i32)
    (call $check
      (call $path_symlink (local.get $target) (call $strlen (local.get $target))
        (global.get $dir) (local.get $path) (call $strlen (local.get $path))))
    (call $write (i32.const 1) (i32.const 136) (i32.const 7)))

  (func (export "_start")
    (local $n i32) (local $op i32)
    (call $first_dir)
    (local.set $n (call $args))
    (if (i32.lt_u (local.get $n) (i32.const 3))
      (then (call $write (i32.const 2) (i32.const 160) (i32.const 66))
            (call $proc_exit (i32.const 2))))
    (local.set $op (i32.load8_u (call $arg (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 114)) ;; 'r'
      (then (call $read (call $arg (i32.const 2))) (return)))
    (if (i32.and (i32.eq (local.get $op) (i32.const 119)) (i32.ge_u (local.get $n) (i32.const 4)))
      (then (call $write_file (call $arg (i32.const 2)) (call $arg (i32.const 3))) (return)))
    (if (i32.and (i32.eq (local.get $op) (i32.const 108)) (i32.ge_u (local.get $n) (i32.const 4)))
      (then (call $link (call $arg (i32.const 2)) (call $arg (i32.const 3))) (return)))
    (call $write (i32.const 2) (i32.const 160) (i32.const 66))
    (call $proc_exit (i32.const 2)))

)

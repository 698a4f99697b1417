//! `wasmlet run pod.yaml` and `wasmlet run REF` as a user runs them: the built binary on the
//! shipped examples, on manifests naming fixture programs, and on images pushed to a real
//! registry.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wasmlet_testkit::{Auth, Registry};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary with a fresh store, state directory and compile cache.
struct Wasmlet {
    dir: tempfile::TempDir,
}

impl Wasmlet {
    fn new() -> Wasmlet {
        Wasmlet {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmlet"));
        cmd.arg("--store")
            .arg(self.dir.path().join("store"))
            .args(args)
            .current_dir(root())
            .env("HOME", self.dir.path())
            .env("WASMLET_STATE_DIR", self.dir.path().join("state"))
            .env("WASMLET_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("WASMLET_PASSWORD");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Writes a manifest in the temporary directory and returns its path.
    fn manifest(&self, text: &str) -> String {
        let path = self.dir.path().join("pod.yaml");
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(bytes: &[u8]) -> Vec<String> {
    text(bytes).lines().map(str::to_owned).collect()
}

/// The status table row of a container, split into columns.
fn row(out: &Output, container: &str) -> Vec<String> {
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(container))
        .unwrap_or_else(|| panic!("no row for {container} in:\n{stdout}"));
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn runs_the_hello_pod_example() {
    let out = Wasmlet::new().run(&["run", "examples/hello/pod.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = lines(&out.stdout);
    assert_eq!(
        stdout[..3],
        [
            "[wasm-hello] hello from stdout!",
            "[wasm-hello] Args are: []",
            "pod wasm-hello: Succeeded",
        ]
    );
    assert_eq!(
        row(&out, "wasm-hello"),
        ["wasm-hello", "Terminated", "Completed", "0", "0"]
    );
    assert!(text(&out.stderr).contains("[wasm-hello] hello from stderr!\n"));
}

#[test]
fn runs_the_volumes_example() {
    let out = Wasmlet::new().run(&["run", "examples/pod-volumes.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = lines(&out.stdout);
    for expected in [
        "[prepare] wrote",
        "[env] env=GREETING=hello from a ConfigMap",
        "[read-shared] written by the init container",
        "[read-secret] s3cret-token",
        "pod greeter: Succeeded",
    ] {
        assert!(
            stdout.contains(&expected.to_owned()),
            "{expected}: {stdout:?}"
        );
    }
    for container in ["prepare", "env", "read-shared", "read-secret"] {
        assert_eq!(row(&out, container)[1..4], ["Terminated", "Completed", "0"]);
    }
}

#[test]
fn example_programs_are_the_fixtures() {
    for (name, fixture) in [
        ("fs", wasmlet_fixtures::fs()),
        ("env", wasmlet_fixtures::env()),
    ] {
        let path = root().join(format!("examples/volumes/{name}.wat"));
        assert_eq!(wat::parse_file(&path).unwrap(), fixture, "{name}");
    }
}

#[test]
fn exits_with_the_failing_containers_code() {
    let wasmlet = Wasmlet::new();
    let exit = wasmlet_fixtures::path("exit");
    let hello = wasmlet_fixtures::path("hello");
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: failing}}\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - {{name: ok, image: {}}}\n  - {{name: bad, image: {}, args: [\"42\"]}}\n",
        hello.display(),
        exit.display()
    ));
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pod failing: Failed\n"));
    assert_eq!(row(&out, "bad"), ["bad", "Terminated", "Error", "42", "0"]);
    assert_eq!(row(&out, "ok")[1..4], ["Terminated", "Completed", "0"]);
}

#[test]
fn runs_more_containers_at_once_than_the_old_pool_had() {
    let wasmlet = Wasmlet::new();
    let sleep = wasmlet_fixtures::path("sleep");
    let count = 80;
    let containers: String = (0..count)
        .map(|i| {
            format!(
                "  - {{name: c{i}, image: {}, args: [\"4000\"]}}\n",
                sleep.display()
            )
        })
        .collect();
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: many}}\nspec:\n  restartPolicy: Never\n  \
         containers:\n{containers}"
    ));
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pod many: Succeeded\n"));
    for i in 0..count {
        let name = format!("c{i}");
        assert_eq!(row(&out, &name)[1..4], ["Terminated", "Completed", "0"]);
        assert!(text(&out.stdout).contains(&format!("[{name}] slept\n")));
    }
}

#[test]
fn bad_manifests_name_the_problem() {
    let wasmlet = Wasmlet::new();
    let manifest = wasmlet.manifest(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, imag: x}\n",
    );
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.containers[0].imag: unknown field"),
        "{}",
        text(&out.stderr)
    );

    let hello = wasmlet_fixtures::path("hello");
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  volumes: [{{name: cfg, configMap: {{name: absent}}}}]\n  \
         containers:\n  - {{name: c, image: {}, volumeMounts: [{{name: cfg, mountPath: /cfg}}]}}\n",
        hello.display()
    ));
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "error: MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(row(&out, "c")[1..3], ["Waiting", "ContainerCreating"]);

    for (key, why) in [
        ("..data", "a key may not start with '..'"),
        ("..2020", "a key may not start with '..'"),
        ("'.'", "a key may not be '.' or '..'"),
    ] {
        let manifest = wasmlet.manifest(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg}}\ndata: {{{key}: lost, ok: kept}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  volumes: [{{name: cfg, configMap: {{name: cfg}}}}]\n  \
             containers:\n  - {{name: c, image: {}, volumeMounts: [{{name: cfg, mountPath: /cfg}}]}}\n",
            hello.display()
        ));
        let out = wasmlet.run(&["run", &manifest]);
        assert_eq!(out.status.code(), Some(1), "{key}");
        let key = key.trim_matches('\'');
        let expected = format!(
            "document 1 (ConfigMap \"cfg\"): data[{key:?}]: invalid key: {why}; rename the key"
        );
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_trap_is_shown_on_the_terminal() {
    let wasmlet = Wasmlet::new();
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: t}}\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - {{name: c, image: {}}}\n",
        wasmlet_fixtures::path("trap").display()
    ));
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(134));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[c] wasmlet: Trap (exit code 134): error while executing")
            && stderr.contains("wasm `unreachable` instruction executed"),
        "{stderr}"
    );
    assert_eq!(row(&out, "c")[1..4], ["Terminated", "Trap", "134"]);

    // A limit's end (a stop of the guest, whose unwritten output is dropped) is shown too.
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: m}}\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - name: m\n    image: {}\n    resources: {{limits: {{memory: 8Mi}}}}\n",
        wasmlet_fixtures::path("membomb").display()
    ));
    let out = wasmlet.run(&["run", &manifest]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[m] wasmlet: OOMKilled (exit code 137): "),
        "{stderr}"
    );
    assert_eq!(row(&out, "m")[1..4], ["Terminated", "OOMKilled", "137"]);
}

#[test]
fn an_always_pod_runs_until_interrupted() {
    let wasmlet = Wasmlet::new();
    let hello = wasmlet_fixtures::path("hello");
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: forever}}\nspec:\n  terminationGracePeriodSeconds: 2\n  \
         containers:\n  - {{name: c, image: {}}}\n",
        hello.display()
    ));
    let mut child = wasmlet
        .command(&["run", &manifest])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < 2 {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "output ended early"
        );
        if line == "[c] hello from stdout!\n" {
            seen += 1;
        }
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("pod forever:"), "{rest}");
    assert!(
        text(&out.stderr).contains("stopping the pod"),
        "{}",
        text(&out.stderr)
    );
    let restarts: i32 = row_of(&rest, "c")[4].parse().unwrap();
    assert!(restarts >= 1, "{rest}");
}

fn row_of(table: &str, container: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(container))
        .unwrap_or_else(|| panic!("no row for {container} in:\n{table}"));
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn runs_an_image_and_a_pod_from_a_registry() {
    let registry = Registry::start(Auth::Open);
    let wasmlet = Wasmlet::new();
    let hello = wasmlet_fixtures::path("hello");
    let reference = format!("{}/demo/hello:v1", registry.host());
    let pushed = wasmlet.run(&["push", hello.to_str().unwrap(), &reference]);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));

    let out = wasmlet.run(&["run", &reference, "--", "a", "b"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from stdout!\nArgs are: [\"a\", \"b\"]\n"
    );
    let listed = text(&wasmlet.run(&["images"]).stdout);
    assert!(
        listed.contains("demo/hello:v1"),
        "pulled into the store: {listed}"
    );

    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - {{name: c, image: {reference}, imagePullPolicy: Always, args: [x]}}\n"
    ));
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = lines(&out.stdout);
    assert_eq!(
        stdout[..2],
        ["[c] hello from stdout!", "[c] Args are: [\"x\"]"]
    );

    let missing = format!("{}/demo/absent:v1", registry.host());
    let manifest = wasmlet.manifest(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: absent}}\nspec:\n  containers:\n  - {{name: c, image: {missing}}}\n"
    ));
    let out = wasmlet.run(&["run", &manifest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: container c: ErrImagePull: pulling"),
        "{}",
        text(&out.stderr)
    );
}

/// A pod whose init container plants, in `volume`, a link `escape` leading (relatively) to
/// `outside`, and whose container then mounts `mount` of that volume.
fn escaping_pod(volume: &str, mount: &str, outside: &Path) -> String {
    let fs = wasmlet_fixtures::path("fs");
    let hello = wasmlet_fixtures::path("hello");
    let target = format!("{}{}", "../".repeat(40), outside.display()).replace("//", "/");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: escape}}\nspec:\n  restartPolicy: Never\n  \
         volumes:\n  - {volume}\n  initContainers:\n  - {{name: plant, image: {}, args: [link, \
         \"{target}\", escape], volumeMounts: [{{name: v, mountPath: /v}}]}}\n  containers:\n  - \
         {{name: c, image: {}, env: [{{name: WHERE, value: escape}}], volumeMounts: [{{name: v, \
         mountPath: /sub, {mount}}}]}}\n",
        fs.display(),
        hello.display()
    )
}

#[test]
fn sub_paths_never_lead_out_of_their_volume() {
    let wasmlet = Wasmlet::new();
    let host = tempfile::tempdir().unwrap();
    let cases = [
        ("{name: v, emptyDir: {}}", "subPath: escape/made"),
        ("{name: v, emptyDir: {}}", "subPathExpr: $(WHERE)/made"),
        (
            &*format!("{{name: v, hostPath: {{path: {}}}}}", host.path().display()),
            "subPath: escape/made",
        ),
    ];
    for (i, (volume, mount)) in cases.into_iter().enumerate() {
        let _ = std::fs::remove_file(host.path().join("escape"));
        let outside = tempfile::tempdir().unwrap();
        let manifest = wasmlet.manifest(&escaping_pod(volume, mount, outside.path()));
        let out = wasmlet.run(&["run", &manifest]);
        let stderr = text(&out.stderr);
        assert!(
            text(&out.stdout).contains("[plant] linked"),
            "case {i}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        assert!(
            stderr.contains(
                "failed to prepare subPath \"escape/made\" of volume \"v\": \
                 \"escape\" resolves outside the volume"
            ),
            "case {i}: {stderr}"
        );
        assert_eq!(
            row(&out, "c")[1..3],
            ["Waiting", "CreateContainerConfigError"]
        );
        let left: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "case {i}: created outside the volume: {left:?}"
        );
    }
}

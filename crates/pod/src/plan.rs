//! Container plans: everything needed to start one container of a pod (argv, environment,
//! working directory, mounts, limits), computed from the Pod, the image's own configuration,
//! the pod's ConfigMaps and Secrets, and the node's facts.

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};

use crate::downward::{self, DownwardError, NodeFacts};
use crate::env::{self, EnvError, EnvList, set_env};
use crate::expansion::{ExpansionBudget, ExpansionError, expand, expand_with_pairs};
use crate::objects::ConfigObjects;
use crate::quantity::QuantityError;

/// The waiting reason the kubelet reports when a container's configuration cannot be built.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// Why a container could not be planned. Every variant is reported as
/// [`CREATE_CONTAINER_CONFIG_ERROR`], with the error's text as the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The environment could not be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A resource limit is malformed.
    #[error("container {container:?}: {source}")]
    Resource {
        /// The container.
        container: String,
        /// The quantity problem.
        source: QuantityError,
    },
    /// A `subPath` or `subPathExpr` is absolute or climbs out of its volume.
    #[error("{0}")]
    SubPath(String),
    /// Expanding `$(VAR)` in `command`, `args` or a `subPathExpr` went past a limit.
    #[error("container {container:?}: {source}")]
    Expansion {
        /// The container.
        container: String,
        /// The limit reached.
        source: ExpansionError,
    },
    /// The container is not part of the pod.
    #[error("container {0:?} not found in pod")]
    ContainerNotFound(String),
    /// The descriptor budget annotation is not a count in range.
    #[error(
        "pod annotation {DESCRIPTORS_ANNOTATION}={0:?}: must be a whole number of handles from 1 to {MAX_DESCRIPTORS} (e.g. \"8192\"); fix or remove it"
    )]
    Descriptors(String),
}

/// The pod annotation that sets each of its containers' descriptor budget: how many WASI
/// handles (open files and directories, sockets and their streams) a guest holds at once.
pub const DESCRIPTORS_ANNOTATION: &str = "wasmlet.dev/max-descriptors";

/// The pod annotation that names the engine its containers run on (`wasmtime` or `wasmer`);
/// without it, the node's (`wasmlet node --engine`).
pub const ENGINE_ANNOTATION: &str = "wasmlet.dev/engine";

/// The engine the pod asks for with [`ENGINE_ANNOTATION`], trimmed, if it asks for one.
pub fn pod_engine(pod: &Pod) -> Option<&str> {
    let annotations = pod.metadata.annotations.as_ref()?;
    annotations.get(ENGINE_ANNOTATION).map(|name| name.trim())
}

/// The largest budget the annotation may ask for (wasmtime's own default table capacity).
pub const MAX_DESCRIPTORS: u32 = 1_000_000;

impl PlanError {
    /// The container waiting reason to report for this error.
    pub fn reason(&self) -> &'static str {
        CREATE_CONTAINER_CONFIG_ERROR
    }
}

/// Result type of this module.
pub type Result<T, E = PlanError> = std::result::Result<T, E>;

/// What the image says about how to run it, from its OCI config. A plain wasm artifact has
/// no config to speak of: give it `entrypoint: vec![<module name>]`, so that `args` from the
/// pod follow a program name as they do in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as name/value pairs.
    pub env: EnvList,
    /// `WorkingDir`, if any.
    pub working_dir: Option<String>,
}

impl ImageConfig {
    /// Reads OCI `Env` entries (`NAME=value`; an entry without `=` sets an empty value).
    pub fn env_from_oci(entries: &[String]) -> EnvList {
        let mut env = EnvList::new();
        for entry in entries {
            let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            if !name.is_empty() {
                set_env(&mut env, name.to_string(), value.to_string());
            }
        }
        env
    }
}

/// Which list of the pod a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// `initContainers`, run to completion in order.
    Init,
    /// `initContainers` with `restartPolicy: Always`: a sidecar started in init order.
    Sidecar,
    /// `containers`.
    Regular,
}

/// One volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// The pod volume's name.
    pub volume: String,
    /// Where it appears in the container.
    pub mount_path: String,
    /// The path inside the volume to mount instead of its root (already expanded).
    pub sub_path: Option<String>,
    /// Whether the container may only read it.
    pub read_only: bool,
}

/// Resource limits of a container, in the units the runtime enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory limit in bytes (rounded up).
    pub memory_bytes: Option<u64>,
    /// CPU limit in millicores (rounded up).
    pub cpu_millis: Option<u64>,
    /// The descriptor budget from [`DESCRIPTORS_ANNOTATION`]; `None` leaves the runtime's.
    pub descriptors: Option<u32>,
}

/// Everything needed to start one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The container's name.
    pub name: String,
    /// Which list it comes from.
    pub kind: ContainerKind,
    /// The image reference.
    pub image: String,
    /// The full argument vector; `argv[0]` is what to run.
    pub argv: Vec<String>,
    /// The environment: the image's, then the pod's on top.
    pub env: EnvList,
    /// The working directory, if the container or the image sets one.
    pub working_dir: Option<String>,
    /// Volumes to mount, in the order given.
    pub mounts: Vec<MountPlan>,
    /// Resource limits.
    pub limits: ResourceLimits,
}

/// The inputs shared by every container of a pod.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its ConfigMaps and Secrets.
    pub objects: &'a ConfigObjects,
    /// Facts from the node.
    pub node: &'a NodeFacts,
}

impl PlanContext<'_> {
    /// Plans the container (or init container) named `name`.
    pub fn plan_by_name(&self, name: &str, image: &ImageConfig) -> Result<ContainerPlan> {
        let container = downward::find_container(self.pod, name)
            .ok_or_else(|| PlanError::ContainerNotFound(name.to_string()))?;
        self.plan(container, image)
    }

    /// Plans `container`, which must belong to the pod.
    pub fn plan(&self, container: &Container, image: &ImageConfig) -> Result<ContainerPlan> {
        let pod_env = env::container_env(self.pod, container, self.objects, self.node)?;
        let mut full_env = image.env.clone();
        for (name, value) in &pod_env {
            set_env(&mut full_env, name.clone(), value.clone());
        }
        Ok(ContainerPlan {
            name: container.name.clone(),
            kind: container_kind(self.pod, container),
            image: container.image.clone().unwrap_or_default(),
            argv: container_argv(container, image, &pod_env)?,
            env: full_env,
            working_dir: working_dir(container, image),
            mounts: container_mounts(container, &pod_env)?,
            limits: ResourceLimits {
                descriptors: pod_descriptors(self.pod)?,
                ..container_limits(container)?
            },
        })
    }
}

/// Which list of `pod` the container belongs to.
pub fn container_kind(pod: &Pod, container: &Container) -> ContainerKind {
    let is_init = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .any(|c| c.name == container.name);
    match (is_init, container.restart_policy.as_deref()) {
        (true, Some("Always")) => ContainerKind::Sidecar,
        (true, _) => ContainerKind::Init,
        (false, _) => ContainerKind::Regular,
    }
}

/// The argument vector, as a container runtime combines the image with `command`/`args`
/// after the kubelet expanded `$(VAR)` in them:
/// `command` replaces the entrypoint and drops the image's `Cmd`; `args` replaces `Cmd`.
/// `command` and `args` together draw from one [`ExpansionBudget`].
pub fn container_argv(
    container: &Container,
    image: &ImageConfig,
    env: &EnvList,
) -> Result<Vec<String>> {
    let mut budget = ExpansionBudget::per_container();
    let mut expand_all = |items: &Vec<String>| -> Result<Vec<String>> {
        items
            .iter()
            .map(|item| expand_with_pairs(item, env, &mut budget))
            .collect::<Result<_, _>>()
            .map_err(|source| expansion_error(container, source))
    };
    let command = container.command.as_ref().filter(|c| !c.is_empty());
    let args = container.args.as_ref().filter(|a| !a.is_empty());
    let mut argv = match command {
        Some(command) => expand_all(command)?,
        None => image.entrypoint.clone(),
    };
    match (args, command) {
        (Some(args), _) => argv.extend(expand_all(args)?),
        (None, None) => argv.extend(image.cmd.iter().cloned()),
        (None, Some(_)) => {}
    }
    Ok(argv)
}

fn expansion_error(container: &Container, source: ExpansionError) -> PlanError {
    PlanError::Expansion {
        container: container.name.clone(),
        source,
    }
}

fn working_dir(container: &Container, image: &ImageConfig) -> Option<String> {
    container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
}

/// The container's mounts, with `subPathExpr` expanded against its environment.
pub fn container_mounts(container: &Container, env: &EnvList) -> Result<Vec<MountPlan>> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| mount_plan(mount, env).map_err(|e| mount_error(container, e)))
        .collect()
}

fn mount_error(container: &Container, error: PlanError) -> PlanError {
    match error {
        PlanError::Expansion { source, .. } => expansion_error(container, source),
        other => other,
    }
}

fn mount_plan(mount: &VolumeMount, env: &EnvList) -> Result<MountPlan> {
    let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        Some(expression) => Some(expand_sub_path_expr(expression, env)?),
        None => mount.sub_path.clone(),
    }
    .filter(|p| !p.is_empty());
    if let Some(path) = &sub_path {
        check_sub_path(path)?;
    }
    Ok(MountPlan {
        volume: mount.name.clone(),
        mount_path: mount.mount_path.clone(),
        sub_path,
        read_only: mount.read_only == Some(true),
    })
}

/// Expands a `subPathExpr`; every variable it names must be defined and non-empty.
fn expand_sub_path_expr(expression: &str, env: &EnvList) -> Result<String> {
    let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let lookup = |name: &str| {
        let value = env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.clone());
        if value.as_deref().is_none_or(str::is_empty) {
            missing.borrow_mut().insert(name.to_string());
        }
        Some(value.unwrap_or_default())
    };
    let mut budget = ExpansionBudget::per_container();
    let expanded =
        expand(expression, lookup, &mut budget).map_err(|source| PlanError::Expansion {
            container: String::new(),
            source,
        })?;
    let missing = missing.into_inner();
    if missing.is_empty() {
        return Ok(expanded);
    }
    let names: Vec<String> = missing.into_iter().collect();
    Err(PlanError::SubPath(format!(
        "missing value for {}",
        names.join(", ")
    )))
}

fn check_sub_path(path: &str) -> Result<()> {
    if path.starts_with('/') {
        return Err(PlanError::SubPath(format!(
            "error SubPath `{path}` must not be an absolute path"
        )));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(PlanError::SubPath(format!(
            "unable to provision SubPath `{path}`: must not contain '..'"
        )));
    }
    Ok(())
}

/// The container's memory and CPU limits.
pub fn container_limits(container: &Container) -> Result<ResourceLimits> {
    let resource_error = |source: QuantityError| PlanError::Resource {
        container: container.name.clone(),
        source,
    };
    let limit = |name: &str| match downward::container_limit(container, name) {
        Ok(value) => Ok(value),
        Err(DownwardError::Quantity(source)) => Err(resource_error(source)),
        Err(other) => Err(PlanError::Env(EnvError::Downward(other))),
    };
    let out_of_range = |name: &str| resource_error(QuantityError::OutOfRange(name.to_string()));
    let memory_bytes = match limit("memory")? {
        Some(q) => Some(non_negative(q.value_rounded_up()).ok_or_else(|| out_of_range("memory"))?),
        None => None,
    };
    let cpu_millis = match limit("cpu")? {
        Some(q) => {
            Some(non_negative(q.milli_value_rounded_up()).ok_or_else(|| out_of_range("cpu"))?)
        }
        None => None,
    };
    Ok(ResourceLimits {
        memory_bytes,
        cpu_millis,
        descriptors: None,
    })
}

/// The pod's descriptor budget annotation, if set.
pub fn pod_descriptors(pod: &Pod) -> Result<Option<u32>> {
    let annotations = pod.metadata.annotations.as_ref();
    let Some(text) = annotations.and_then(|a| a.get(DESCRIPTORS_ANNOTATION)) else {
        return Ok(None);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_DESCRIPTORS).contains(&n) => Ok(Some(n)),
        _ => Err(PlanError::Descriptors(text.clone())),
    }
}

fn non_negative(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec_yaml: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec_yaml}");
        serde_yaml::from_str(&text).unwrap()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn plan_first(spec_yaml: &str, image: &ImageConfig) -> Result<ContainerPlan> {
        let pod = pod(spec_yaml);
        let objects = ConfigObjects::default();
        let node = NodeFacts::default();
        let context = PlanContext {
            pod: &pod,
            objects: &objects,
            node: &node,
        };
        let name = pod.spec.as_ref().unwrap().containers[0].name.clone();
        context.plan_by_name(&name, image)
    }

    #[test]
    fn combines_command_and_args_with_the_image() {
        let img = image(&["/entry.wasm", "--flag"], &["default-arg"]);
        let cases: &[(&str, &[&str])] = &[
            (
                "{name: c, image: i}",
                &["/entry.wasm", "--flag", "default-arg"],
            ),
            (
                "{name: c, image: i, command: [/other.wasm]}",
                &["/other.wasm"],
            ),
            (
                "{name: c, image: i, args: [x, y]}",
                &["/entry.wasm", "--flag", "x", "y"],
            ),
            (
                "{name: c, image: i, command: [/other.wasm], args: [x]}",
                &["/other.wasm", "x"],
            ),
            (
                "{name: c, image: i, command: [], args: []}",
                &["/entry.wasm", "--flag", "default-arg"],
            ),
            (
                "{name: c, image: i, env: [{name: W, value: world}], args: ['hello $(W)', '$$(W)', '$(NOPE)']}",
                &["/entry.wasm", "--flag", "hello world", "$(W)", "$(NOPE)"],
            ),
            (
                "{name: c, image: i, env: [{name: B, value: /bin.wasm}], command: ['$(B)']}",
                &["/bin.wasm"],
            ),
        ];
        for (container, expected) in cases {
            let spec = format!("  containers:\n  - {container}\n");
            let plan = plan_first(&spec, &img).unwrap();
            assert_eq!(plan.argv, *expected, "{container}");
        }
    }

    #[test]
    fn image_env_is_overridden_by_the_pod() {
        let img = ImageConfig {
            env: vec![("PATH".into(), "/".into()), ("MODE".into(), "image".into())],
            working_dir: Some("/img".into()),
            ..Default::default()
        };
        let plan = plan_first("  containers:\n  - {name: c, image: i, env: [{name: MODE, value: pod}, {name: X, value: '$(PATH)'}]}\n", &img).unwrap();
        let expected: EnvList = vec![
            ("PATH".into(), "/".into()),
            ("MODE".into(), "pod".into()),
            ("X".into(), "$(PATH)".into()),
        ];
        assert_eq!(plan.env, expected);
        assert_eq!(plan.working_dir.as_deref(), Some("/img"));
        let own_dir = plan_first(
            "  containers:\n  - {name: c, image: i, workingDir: /work}\n",
            &img,
        )
        .unwrap();
        assert_eq!(own_dir.working_dir.as_deref(), Some("/work"));
    }

    #[test]
    fn plans_mounts() {
        let spec = "  volumes:\n  - {name: data, emptyDir: {}}\n  containers:\n  - name: c\n    image: i\n    env: [{name: SUB, value: logs}]\n    volumeMounts:\n    - {name: data, mountPath: /data}\n    - {name: data, mountPath: /ro, readOnly: true, subPath: cfg}\n    - {name: data, mountPath: /x, subPathExpr: 'out/$(SUB)'}\n";
        let plan = plan_first(spec, &ImageConfig::default()).unwrap();
        let summary: Vec<(&str, &str, Option<&str>, bool)> = plan
            .mounts
            .iter()
            .map(|m| {
                (
                    m.volume.as_str(),
                    m.mount_path.as_str(),
                    m.sub_path.as_deref(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("data", "/data", None, false),
                ("data", "/ro", Some("cfg"), true),
                ("data", "/x", Some("out/logs"), false)
            ]
        );
    }

    #[test]
    fn rejects_escaping_sub_paths() {
        let cases = [
            ("/abs", "must not be an absolute path"),
            ("../up", "must not contain '..'"),
            ("a/../../b", "must not contain '..'"),
        ];
        for (sub_path, expected) in cases {
            let spec = format!(
                "  volumes:\n  - {{name: d, emptyDir: {{}}}}\n  containers:\n  - name: c\n    image: i\n    volumeMounts:\n    - {{name: d, mountPath: /d, subPath: '{sub_path}'}}\n"
            );
            let error = plan_first(&spec, &ImageConfig::default()).unwrap_err();
            assert!(error.to_string().contains(expected), "{sub_path}: {error}");
            assert_eq!(error.reason(), "CreateContainerConfigError");
        }
    }

    #[test]
    fn sub_path_expr_needs_every_variable() {
        let spec = |expr: &str| {
            format!(
                "  volumes:\n  - {{name: d, emptyDir: {{}}}}\n  containers:\n  - name: c\n    image: i\n    env: [{{name: POD, value: p1}}, {{name: EMPTY, value: ''}}]\n    volumeMounts:\n    - {{name: d, mountPath: /d, subPathExpr: '{expr}'}}\n"
            )
        };
        let cases: &[(&str, std::result::Result<&str, &str>)] = &[
            ("logs/$(POD)", Ok("logs/p1")),
            ("$$(POD)", Ok("$(POD)")),
            ("$(NOPE)/$(POD)", Err("missing value for NOPE")),
            ("$(B)/$(A)/$(EMPTY)", Err("missing value for A, B, EMPTY")),
        ];
        for (expr, expected) in cases {
            let result = plan_first(&spec(expr), &ImageConfig::default());
            match (result, expected) {
                (Ok(plan), Ok(path)) => {
                    assert_eq!(plan.mounts[0].sub_path.as_deref(), Some(*path), "{expr}")
                }
                (Err(error), Err(message)) => assert_eq!(error.to_string(), *message, "{expr}"),
                (other, _) => panic!("{expr}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn reads_oci_env_entries() {
        let entries: Vec<String> = [
            "PATH=/bin",
            "EMPTY=",
            "BARE",
            "EQ=a=b",
            "=skipped",
            "PATH=/usr/bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let expected: EnvList = [
            ("PATH", "/usr/bin"),
            ("EMPTY", ""),
            ("BARE", ""),
            ("EQ", "a=b"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(ImageConfig::env_from_oci(&entries), expected);
    }

    #[test]
    fn converts_limits() {
        let cases: &[(&str, Option<u64>, Option<u64>)] = &[
            ("{}", None, None),
            ("{limits: {memory: 64Mi}}", Some(64 << 20), None),
            (
                "{limits: {cpu: 250m, memory: 1G}}",
                Some(1_000_000_000),
                Some(250),
            ),
            ("{limits: {cpu: '2'}}", None, Some(2000)),
            ("{limits: {cpu: 0.1}}", None, Some(100)),
            ("{requests: {cpu: '1'}}", None, None),
        ];
        for (resources, memory, cpu) in cases {
            let spec =
                format!("  containers:\n  - {{name: c, image: i, resources: {resources}}}\n");
            let plan = plan_first(&spec, &ImageConfig::default()).unwrap();
            assert_eq!(
                plan.limits,
                ResourceLimits {
                    memory_bytes: *memory,
                    cpu_millis: *cpu,
                    descriptors: None,
                },
                "{resources}"
            );
        }
        let bad = plan_first(
            "  containers:\n  - {name: c, image: i, resources: {limits: {memory: lots}}}\n",
            &ImageConfig::default(),
        );
        assert!(matches!(bad, Err(PlanError::Resource { .. })));
        let negative = plan_first(
            "  containers:\n  - {name: c, image: i, resources: {limits: {memory: '-1'}}}\n",
            &ImageConfig::default(),
        );
        assert!(matches!(negative, Err(PlanError::Resource { .. })));
    }

    #[test]
    fn the_descriptor_budget_comes_from_the_pod_annotation() {
        let with = |value: &str| {
            let mut pod = pod("  containers:\n  - {name: c, image: i}\n");
            pod.metadata.annotations = Some(
                [(DESCRIPTORS_ANNOTATION.to_string(), value.to_string())]
                    .into_iter()
                    .collect(),
            );
            pod_descriptors(&pod)
        };
        assert_eq!(with("8192").unwrap(), Some(8192));
        assert_eq!(with(" 1 ").unwrap(), Some(1));
        for bad in ["0", "-3", "lots", "1000001", "99999999999", ""] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains(DESCRIPTORS_ANNOTATION) && err.contains("fix"),
                "{bad}: {err}"
            );
        }
        let plain = plan_first(
            "  containers:\n  - {name: c, image: i}\n",
            &ImageConfig::default(),
        );
        assert_eq!(plain.unwrap().limits.descriptors, None);
    }

    #[test]
    fn tells_container_kinds_apart() {
        let pod = pod(
            "  initContainers:\n  - {name: setup, image: i}\n  - {name: proxy, image: i, restartPolicy: Always}\n  containers:\n  - {name: main, image: i}\n",
        );
        let spec = pod.spec.as_ref().unwrap();
        let inits = spec.init_containers.as_ref().unwrap();
        assert_eq!(container_kind(&pod, &inits[0]), ContainerKind::Init);
        assert_eq!(container_kind(&pod, &inits[1]), ContainerKind::Sidecar);
        assert_eq!(
            container_kind(&pod, &spec.containers[0]),
            ContainerKind::Regular
        );
    }

    #[test]
    fn env_errors_surface_as_config_errors() {
        let error = plan_first(
            "  containers:\n  - {name: c, image: i, envFrom: [{configMapRef: {name: missing}}]}\n",
            &ImageConfig::default(),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "configmap \"missing\" not found");
        assert_eq!(error.reason(), CREATE_CONTAINER_CONFIG_ERROR);
        let pod = pod("  containers:\n  - {name: c, image: i}\n");
        let objects = ConfigObjects::default();
        let node = NodeFacts::default();
        let context = PlanContext {
            pod: &pod,
            objects: &objects,
            node: &node,
        };
        assert!(matches!(
            context.plan_by_name("ghost", &ImageConfig::default()),
            Err(PlanError::ContainerNotFound(_))
        ));
    }
}

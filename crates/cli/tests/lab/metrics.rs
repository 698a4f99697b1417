//! metrics-server on the lab's control-plane host, behind the API server's aggregation layer
//! as in a real cluster: its own ServiceAccount and RBAC (after metrics-server's manifests),
//! a serving certificate from the cluster CA that the `v1beta1.metrics.k8s.io` APIService
//! verifies, and a Service without a selector whose EndpointSlice holds the control plane's
//! address. The API server dials that address because the cluster was built with
//! [`AGGREGATOR_ROUTING`] (it would dial the Service's ClusterIP otherwise, which no
//! kube-proxy serves on the control plane's host; and it refuses loopback endpoints).
//!
//! metrics-server scrapes each node's kubelet API (`/metrics/resource`) at its InternalIP
//! with the ServiceAccount's token, verifying the serving certificates with the cluster CA
//! (the nodes' approved `kubernetes.io/kubelet-serving` certificates). The stock kubelet of
//! the lab takes client certificates only, so its node is not scraped (metrics-server logs
//! that, every round).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cluster::{Cluster, cache_bin};
use super::{Lab, eventually, ok};

/// The variable of `tests/cluster/up` for [`Cluster::build_with_env`] that makes the API
/// server route to an aggregated API's endpoint address.
pub const AGGREGATOR_ROUTING: (&str, &str) = ("WASMLET_AGGREGATOR_ROUTING", "1");
/// The background process's name, and the Service's.
pub const NAME: &str = "metrics-server";
/// Where metrics-server listens on the control plane's address.
pub const PORT: u16 = 4443;
/// How often it scrapes the nodes (the shortest it allows, above the request timeout).
pub const RESOLUTION: Duration = Duration::from_secs(10);
/// The APIService it serves.
pub const API_SERVICE: &str = "v1beta1.metrics.k8s.io";

/// The ServiceAccount and its RBAC, as metrics-server's own manifests have them.
const RBAC: &str = "apiVersion: v1\nkind: ServiceAccount\n\
     metadata: {name: metrics-server, namespace: kube-system}\n---\n\
     apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
     metadata:\n  name: system:aggregated-metrics-reader\n  labels:\n    \
     rbac.authorization.k8s.io/aggregate-to-view: 'true'\n    \
     rbac.authorization.k8s.io/aggregate-to-edit: 'true'\n    \
     rbac.authorization.k8s.io/aggregate-to-admin: 'true'\n\
     rules: [{apiGroups: [metrics.k8s.io], resources: [pods, nodes], verbs: [get, list, watch]}]\n\
     ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
     metadata: {name: 'system:metrics-server'}\nrules:\n\
     - {apiGroups: [''], resources: [nodes/metrics], verbs: [get]}\n\
     - {apiGroups: [''], resources: [pods, nodes], verbs: [get, list, watch]}\n\
     ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
     metadata: {name: 'system:metrics-server'}\n\
     roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:metrics-server'}\n\
     subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]\n\
     ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
     metadata: {name: 'metrics-server:system:auth-delegator'}\n\
     roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:auth-delegator'}\n\
     subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]\n\
     ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
     metadata: {name: metrics-server-auth-reader, namespace: kube-system}\n\
     roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, \
     name: extension-apiserver-authentication-reader}\n\
     subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]\n";

/// Starts metrics-server on the control plane's host, registers it, and waits until the
/// APIService is Available. The cluster must have been built with [`AGGREGATOR_ROUTING`].
pub fn start(lab: &mut Lab, cluster: &Cluster) -> Result<()> {
    let dir = lab.dir().join(NAME);
    std::fs::create_dir_all(&dir)?;
    cluster.apply(lab, RBAC).context("metrics-server's RBAC")?;
    let kubeconfig = write_kubeconfig(cluster, &dir)?;
    let (cert, key) = serving_certificate(cluster, &dir)?;
    let state = PathBuf::from(cluster.var("WASMLET_CLUSTER_STATE"));
    let mut command = cluster.control.command(cache_bin().join(NAME));
    command
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg(format!("--authentication-kubeconfig={kubeconfig}"))
        .arg(format!("--authorization-kubeconfig={kubeconfig}"))
        .arg(format!("--bind-address={}", cluster.control.ip))
        .arg(format!("--secure-port={PORT}"))
        .arg(format!("--tls-cert-file={cert}"))
        .arg(format!("--tls-private-key-file={key}"))
        .arg(format!(
            "--requestheader-client-ca-file={}",
            state.join("pki/front-proxy-ca.crt").display()
        ))
        .arg("--requestheader-allowed-names=front-proxy-client")
        .arg("--kubelet-preferred-address-types=InternalIP")
        .arg("--kubelet-use-node-status-port")
        .arg(format!(
            "--kubelet-certificate-authority={}",
            cluster.var("WASMLET_CLUSTER_CA")
        ))
        .arg(format!("--metric-resolution={}s", RESOLUTION.as_secs()))
        .arg("--kubelet-request-timeout=5s");
    lab.spawn(NAME, command)?;
    cluster
        .apply(lab, &registration(cluster)?)
        .context("registering metrics-server")?;
    available(lab, cluster)
}

/// A kubeconfig for the ServiceAccount, with a token `kubectl create token` gives.
fn write_kubeconfig(cluster: &Cluster, dir: &Path) -> Result<String> {
    let token = cluster.kubectl(&[
        "create",
        "token",
        "metrics-server",
        "-n",
        "kube-system",
        "--duration=2h",
    ])?;
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    \
             server: {}\n    certificate-authority: {}\nusers:\n- name: metrics-server\n  \
             user: {{token: {}}}\ncontexts:\n- name: metrics-server\n  \
             context: {{cluster: lab, user: metrics-server}}\ncurrent-context: metrics-server\n",
            cluster.var("WASMLET_APISERVER"),
            cluster.var("WASMLET_CLUSTER_CA"),
            token.trim()
        ),
    )?;
    Ok(path.to_string_lossy().into_owned())
}

/// A serving certificate signed by the cluster CA for the Service's name (the name the API
/// server checks) and the control plane's address; returns the certificate's and key's paths.
fn serving_certificate(cluster: &Cluster, dir: &Path) -> Result<(String, String)> {
    let (cert, key, csr, ext) = (
        dir.join("serving.crt"),
        dir.join("serving.key"),
        dir.join("serving.csr"),
        dir.join("serving.ext"),
    );
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{NAME}.kube-system.svc,IP:{}\n",
            cluster.control.ip
        ),
    )?;
    openssl(
        Command::new("openssl")
            .args(["req", "-new", "-nodes", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-subj",
                "/CN=metrics-server",
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &csr.to_string_lossy(),
            ]),
    )?;
    openssl(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-in", &csr.to_string_lossy()])
            .args(["-CA", &cluster.var("WASMLET_CLUSTER_CA")])
            .args(["-CAkey", &cluster.var("WASMLET_CLUSTER_CA_KEY")])
            .args(["-CAserial", &dir.join("ca.srl").to_string_lossy()])
            .args(["-CAcreateserial", "-extfile", &ext.to_string_lossy()])
            .args(["-out", &cert.to_string_lossy()]),
    )?;
    Ok((
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    ))
}

/// Runs an `openssl` command; fails with its output unless it succeeds.
fn openssl(command: &mut Command) -> Result<()> {
    let output = command.output().context("running openssl")?;
    ok(&output).context("openssl, making metrics-server's serving certificate")?;
    Ok(())
}

/// The Service (no selector), its EndpointSlice at the control plane's address, and the
/// APIService trusting the cluster CA.
fn registration(cluster: &Cluster) -> Result<String> {
    let ca = std::fs::File::open(cluster.var("WASMLET_CLUSTER_CA")).context("the cluster CA")?;
    let output = Command::new("base64").arg("-w0").stdin(ca).output()?;
    let bundle = ok(&output).context("base64 of the cluster CA")?;
    anyhow::ensure!(!bundle.is_empty(), "the cluster CA is empty");
    Ok(format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {NAME}, namespace: kube-system}}\n\
         spec:\n  ports: [{{name: https, port: 443, protocol: TCP, targetPort: {PORT}}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
         name: {NAME}-control-plane\n  namespace: kube-system\n  labels:\n    \
         kubernetes.io/service-name: {NAME}\n    \
         endpointslice.kubernetes.io/managed-by: wasmlet-lab\naddressType: IPv4\n\
         endpoints: [{{addresses: ['{}'], conditions: {{ready: true}}}}]\n\
         ports: [{{name: https, port: {PORT}, protocol: TCP}}]\n---\n\
         apiVersion: apiregistration.k8s.io/v1\nkind: APIService\n\
         metadata: {{name: {API_SERVICE}}}\nspec:\n  group: metrics.k8s.io\n  version: v1beta1\n  \
         groupPriorityMinimum: 100\n  versionPriority: 100\n  caBundle: {bundle}\n  \
         service: {{name: {NAME}, namespace: kube-system, port: 443}}\n",
        cluster.control.ip
    ))
}

/// Waits until the APIService is Available (the API server reached metrics-server's
/// discovery through the aggregation layer); fails with what [`diagnose`] shows.
fn available(lab: &mut Lab, cluster: &Cluster) -> Result<()> {
    let found = eventually(
        Duration::from_secs(90),
        "the metrics APIService Available",
        || {
            if !lab.running(NAME) {
                return Some(false);
            }
            let service = cluster
                .kubectl_json(&["get", "apiservice", API_SERVICE])
                .ok()?;
            (super::cluster::condition(&service, "Available") == Some("True")).then_some(true)
        },
    );
    match found {
        Ok(true) => Ok(()),
        Ok(false) => Err(anyhow::anyhow!(
            "metrics-server exited\n{}",
            diagnose(lab, cluster)
        )),
        Err(e) => Err(e.context(diagnose(lab, cluster))),
    }
}

/// The APIService's conditions and the end of metrics-server's log.
pub fn diagnose(lab: &Lab, cluster: &Cluster) -> String {
    let conditions = cluster
        .kubectl(&[
            "get",
            "apiservice",
            API_SERVICE,
            "-o",
            "jsonpath={.status.conditions}",
        ])
        .unwrap_or_else(|e| format!("{e:#}"));
    format!(
        "APIService {API_SERVICE} conditions: {conditions}\n{}",
        lab.log_tail(NAME, 40)
    )
}

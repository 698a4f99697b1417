//! The kubelet's command streaming endpoints, `/exec`, `/attach` and `/run`
//! (`/{verb}/{namespace}/{pod}[/{uid}]/{container}`), answered as the kubelet answers when its
//! container runtime refuses a request: a `Status` whose message `kubectl exec` and
//! `kubectl attach` print. A WebAssembly container is not a process tree with a shell, so
//! there is nothing to run a command in or attach a terminal to; the answer says what to use
//! instead.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::api::Api;

use crate::api::server::{ApiContext, Watched};

/// Why a streaming request is refused, worded for the user who typed the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The URL does not name a pod and container.
    #[error("malformed {verb} request: expected /{verb}/NAMESPACE/POD[/UID]/CONTAINER")]
    Malformed {
        /// exec, attach or run.
        verb: &'static str,
    },
    /// The pod is not one of this node's.
    #[error("pod does not exist")]
    NoPod,
    /// The pod has no such container.
    #[error("container not found ({0:?})")]
    NoContainer(String),
    /// The container exists, and is WebAssembly.
    #[error(
        "{verb} is not supported for WebAssembly containers: a wasm pod has no shell; use kubectl logs, or kubectl port-forward to reach its ports"
    )]
    Unsupported {
        /// exec, attach or run.
        verb: &'static str,
    },
}

impl Refusal {
    fn code(&self) -> StatusCode {
        match self {
            Refusal::Malformed { .. } | Refusal::Unsupported { .. } => StatusCode::BAD_REQUEST,
            Refusal::NoPod | Refusal::NoContainer(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The `Status` object the kubelet writes for a refused stream.
    fn into_status(self) -> Response {
        let code = self.code();
        let reason = match code {
            StatusCode::NOT_FOUND => "NotFound",
            _ => "BadRequest",
        };
        let status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            status.to_string(),
        )
            .into_response()
    }
}

/// `/exec/...`.
pub(crate) async fn exec(context: State<Arc<ApiContext>>, path: UrlPath<String>) -> Response {
    refuse("exec", context, path).await
}

/// `/attach/...`.
pub(crate) async fn attach(context: State<Arc<ApiContext>>, path: UrlPath<String>) -> Response {
    refuse("attach", context, path).await
}

/// `/run/...`.
pub(crate) async fn run(context: State<Arc<ApiContext>>, path: UrlPath<String>) -> Response {
    refuse("run", context, path).await
}

async fn refuse(
    verb: &'static str,
    State(context): State<Arc<ApiContext>>,
    UrlPath(rest): UrlPath<String>,
) -> Response {
    let refusal = match target(verb, &rest) {
        Ok((namespace, pod, container)) => check(&context, verb, namespace, pod, container).await,
        Err(refusal) => refusal,
    };
    refusal.into_status()
}

/// The namespace, pod and container of `NAMESPACE/POD[/UID]/CONTAINER`.
fn target<'a>(verb: &'static str, rest: &'a str) -> Result<(&'a str, &'a str, &'a str), Refusal> {
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [ns, pod, container] | [ns, pod, _, container]
            if [ns, pod, container].iter().all(|p| !p.is_empty()) =>
        {
            Ok((ns, pod, container))
        }
        _ => Err(Refusal::Malformed { verb }),
    }
}

/// The kubelet's checks in its order: the pod, then the container, then the runtime's word.
async fn check(
    context: &ApiContext,
    verb: &'static str,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Refusal {
    let watched = Watched {
        store: context.pods.clone(),
        api: Api::namespaced(context.client.clone(), namespace),
        namespace: namespace.to_string(),
        pod: pod.to_string(),
    };
    let Ok(pod) = watched.get().await else {
        return Refusal::NoPod;
    };
    let on_this_node =
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(context.node_name.as_str());
    if !on_this_node {
        return Refusal::NoPod;
    }
    let has_container = pod.spec.iter().any(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == container)
    });
    match has_container {
        true => Refusal::Unsupported { verb },
        false => Refusal::NoContainer(container.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_namespace_pod_and_container_with_an_optional_uid() {
        assert_eq!(target("exec", "ns/p/c"), Ok(("ns", "p", "c")));
        assert_eq!(target("exec", "ns/p/uid-1/c"), Ok(("ns", "p", "c")));
        for bad in ["", "ns", "ns/p", "ns//c", "a/b/c/d/e"] {
            assert_eq!(
                target("attach", bad),
                Err(Refusal::Malformed { verb: "attach" }),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusals_are_statuses_kubectl_prints() {
        let refusal = Refusal::Unsupported { verb: "exec" };
        assert!(refusal.to_string().starts_with(
            "exec is not supported for WebAssembly containers: a wasm pod has no shell"
        ));
        assert_eq!(refusal.code(), StatusCode::BAD_REQUEST);
        assert_eq!(Refusal::NoPod.code(), StatusCode::NOT_FOUND);
    }
}

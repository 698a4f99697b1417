//! Local storage limits: an `emptyDir` whose content outgrows its `sizeLimit` gets the pod
//! evicted, as the kubelet's eviction manager does (checked every [`CHECK_EVERY`]; the pod
//! fails with reason `Evicted` and the kubelet's message, its containers stopped at once).

use std::path::Path;
use std::time::Duration;

use wasmlet_pod::k8s_openapi::api::core::v1::Pod;
use wasmlet_pod::{PodFailure, parse_quantity};

use crate::paths::PodDir;

/// How often emptyDir usage is measured.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The emptyDir volumes with a `sizeLimit`: (name, limit in bytes, the limit as written).
pub(crate) fn limited_empty_dirs(pod: &Pod) -> Vec<(String, u64, String)> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| {
            let limit = v.empty_dir.as_ref()?.size_limit.as_ref()?;
            let bytes = parse_quantity(&limit.0).ok()?.value_rounded_up()?;
            Some((v.name.clone(), u64::try_from(bytes).ok()?, limit.0.clone()))
        })
        .collect()
}

/// The eviction of a pod one of whose emptyDirs is over its limit, if any.
pub(crate) fn over_limit(pod: &Pod, dir: &PodDir) -> Option<PodFailure> {
    limited_empty_dirs(pod)
        .into_iter()
        .find_map(|(name, limit, written)| {
            let used = usage(&dir.volume(&name));
            (used > limit).then(|| PodFailure {
                reason: "Evicted".into(),
                message: format!(
                    "Usage of EmptyDir volume \"{name}\" exceeds the limit \"{written}\". "
                ),
            })
        })
}

/// Bytes used by the files under `path` (symlinks not followed).
pub(crate) fn usage(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => usage(&entry.path()),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("g"), vec![0u8; 24]).unwrap();
        assert_eq!(usage(dir.path()), 1024);
        assert_eq!(usage(&dir.path().join("missing")), 0);
    }
}

//! What a pod's files take on the node's disk, for the Summary API: each volume directory
//! (emptyDir, ConfigMap, Secret, downward API and projected volumes all live under the pod's
//! directory) and each container's logs, measured as `du` does (allocated blocks, each file
//! and directory one inode, symbolic links not followed).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use wasmlet_worker::PodDir;

/// Bytes and inodes of one directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Bytes of the blocks allocated to its files and directories.
    pub bytes: u64,
    /// Files, directories and links in it (itself included).
    pub inodes: u64,
}

impl std::ops::Add for DirUsage {
    type Output = DirUsage;

    fn add(self, other: DirUsage) -> DirUsage {
        DirUsage {
            bytes: self.bytes + other.bytes,
            inodes: self.inodes + other.inodes,
        }
    }
}

/// One pod's volumes and logs, by volume and container name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDisk {
    /// Each volume directory.
    pub volumes: BTreeMap<String, DirUsage>,
    /// Each container's log directory (all its runs' logs).
    pub logs: BTreeMap<String, DirUsage>,
}

impl PodDisk {
    /// Reads the disk use of the pod with `uid` under the node's data directory (nothing
    /// for a pod without a directory).
    pub fn read(data_dir: &Path, uid: &str) -> PodDisk {
        let Ok(pod) = PodDir::new(data_dir, uid) else {
            return PodDisk::default();
        };
        PodDisk {
            volumes: children(&pod.path().join("volumes")),
            logs: children(&pod.path().join("logs")),
        }
    }

    /// The pod's local ephemeral storage: its volumes and logs together.
    pub fn total(&self) -> DirUsage {
        let all = self.volumes.values().chain(self.logs.values());
        all.copied().fold(DirUsage::default(), |a, b| a + b)
    }
}

/// The usage of each subdirectory of `dir`, by name.
fn children(dir: &Path) -> BTreeMap<String, DirUsage> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    let named = entries.flatten().filter_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        Some((name, usage(&entry.path())))
    });
    named.collect()
}

/// The usage of the tree at `path` (a file, link or directory).
pub fn usage(path: &Path) -> DirUsage {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return DirUsage::default();
    };
    let own = DirUsage {
        bytes: meta.blocks() * 512,
        inodes: 1,
    };
    if !meta.is_dir() {
        return own;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    entries
        .flatten()
        .map(|entry| usage(&entry.path()))
        .fold(own, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_logs_are_measured_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let pod = PodDir::new(root.path(), "uid-1").unwrap();
        let data = pod.volume("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("big"), vec![7u8; 64 * 1024]).unwrap();
        // A link out of the pod (as ConfigMap volumes' `..data` links are) counts as itself.
        std::os::unix::fs::symlink("/usr", data.join("outside")).unwrap();
        std::fs::create_dir_all(pod.logs("main")).unwrap();
        std::fs::write(pod.log("main", 0), "line\n").unwrap();

        let disk = PodDisk::read(root.path(), "uid-1");
        let data = disk.volumes["data"];
        assert_eq!(data.inodes, 3, "the directory, the file and the link");
        assert!(data.bytes >= 64 * 1024, "{data:?}");
        assert!(data.bytes < 1024 * 1024, "the link was followed: {data:?}");
        assert_eq!(disk.logs["main"].inodes, 2);
        assert_eq!(disk.total(), data + disk.logs["main"]);
        assert_eq!(PodDisk::read(root.path(), "uid-none"), PodDisk::default());
    }
}

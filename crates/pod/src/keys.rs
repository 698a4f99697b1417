//! The keys of ConfigMaps and Secrets, checked as the API server checks them
//! (`IsConfigMapKey`): a key becomes a file name in a volume and an environment variable's
//! source, so one the API server would refuse must never reach either.

/// The longest key the API server accepts (a DNS subdomain's length).
pub const MAX_KEY_BYTES: usize = 253;

/// Why the API server would refuse `key` as a ConfigMap or Secret key, or `None` when it is
/// valid: at most [`MAX_KEY_BYTES`] of `-`, `_`, `.` and ASCII letters and digits, not `.`
/// or `..`, and not starting with `..` (the volume writer keeps such names for itself: a key
/// `..data` would replace the link that points at the current content).
pub fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("a key may not be empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("a key may have at most 253 characters")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("a key may hold only letters, digits, '-', '_' and '.'")
    } else if key == "." || key == ".." {
        Some("a key may not be '.' or '..'")
    } else if key.starts_with("..") {
        Some("a key may not start with '..'")
    } else {
        None
    }
}

/// Why the volume writer would refuse `path` as a file's path inside a volume (an item's
/// `path`, or a key projected as itself), or `None` when it is valid: relative, no `..` or `.`
/// element nor an empty one, not starting with `..`, at most 4096 bytes with elements of at
/// most 255, as the kubelet's atomic writer checks.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("a path may not be empty")
    } else if path.starts_with('/') {
        Some("a path must be relative")
    } else if path.len() > 4096 {
        Some("a path may have at most 4096 bytes")
    } else if path.starts_with("..") {
        Some("a path may not start with '..'")
    } else if path
        .split('/')
        .any(|p| p == ".." || p == "." || p.is_empty())
    {
        Some("a path may not have a '..', '.' or empty element")
    } else if path.split('/').any(|p| p.len() > 255) {
        Some("an element of a path may have at most 255 bytes")
    } else if path.contains('\0') {
        Some("a path may not hold a NUL byte")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_keys_kubernetes_accepts() {
        for key in [
            "a",
            "app.conf",
            "-x_y.z",
            ".hidden",
            "a..b",
            "A9",
            &"k".repeat(253),
        ] {
            assert_eq!(key_problem(key), None, "{key}");
        }
    }

    #[test]
    fn refuses_the_keys_kubernetes_refuses() {
        for (key, why) in [
            ("", "empty"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("..data", "start with '..'"),
            ("..2020", "start with '..'"),
            ("a/b", "only letters"),
            ("a b", "only letters"),
            ("é", "only letters"),
            (&"k".repeat(254), "253"),
        ] {
            let problem = key_problem(key).unwrap_or_else(|| panic!("{key:?} accepted"));
            assert!(problem.contains(why), "{key:?}: {problem}");
        }
    }

    #[test]
    fn checks_paths_as_the_volume_writer_does() {
        for path in ["a", "a/b.conf", "d/.hidden", "a..b/c"] {
            assert_eq!(path_problem(path), None, "{path}");
        }
        for path in [
            "", "/etc", "../x", "..data", "a/../b", "a/./b", "./a", "a//b", "a/",
        ] {
            assert!(path_problem(path).is_some(), "{path:?} accepted");
        }
        assert!(path_problem(&"x".repeat(256)).is_some());
    }

    proptest! {
        /// Whatever a key, a valid one is a safe single file name inside the volume.
        #[test]
        fn key_and_path_properties(key in "[-._a-z.]{0,12}|\\PC{0,12}") {
            if key_problem(&key).is_none() {
                prop_assert_eq!(path_problem(&key), None);
                prop_assert!(!key.contains('/'));
            }
        }
    }
}

//! `$(VAR)` references in `command`, `args`, env values and `subPathExpr`, expanded as the
//! kubelet does.
//!
//! * `$(NAME)` becomes the value of `NAME` when it is defined, and stays `$(NAME)` when not;
//! * `$$` is an escaped `$`, so `$$(NAME)` becomes the literal `$(NAME)`;
//! * any other `$` (a trailing one, `$x`, an unclosed `$(`) is kept as written.

/// Expands the `$(VAR)` references in `input`, looking names up with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let consumed = expand_reference(after, &lookup, &mut output);
        rest = &after[consumed..];
    }
    output.push_str(rest);
    output
}

/// Handles the text after one `$`: writes its expansion and returns the bytes it consumed.
fn expand_reference(
    after: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    output: &mut String,
) -> usize {
    match after.chars().next() {
        None => {
            output.push('$');
            0
        }
        Some('$') => {
            output.push('$');
            1
        }
        Some('(') => match after.find(')') {
            Some(close) => {
                let name = &after[1..close];
                match lookup(name) {
                    Some(value) => output.push_str(&value),
                    None => {
                        output.push_str("$(");
                        output.push_str(name);
                        output.push(')');
                    }
                }
                close + 1
            }
            None => {
                output.push_str("$(");
                1
            }
        },
        Some(other) => {
            output.push('$');
            output.push(other);
            other.len_utf8()
        }
    }
}

/// Expands with a list of `(name, value)` pairs; a later pair wins over an earlier one.
pub fn expand_with_pairs(input: &str, pairs: &[(String, String)]) -> String {
    expand(input, |name| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn expands_like_the_kubelet() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("plain", "plain"),
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_B)-$(VAR_C)", "A-B-C"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("$(VAR_EMPTY)", ""),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("foo$(UNDEFINED)bar", "foo$(UNDEFINED)bar"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$", "$"),
            ("$$$", "$$"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$VAR_A", "$VAR_A"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(", "$("),
            ("$()", "$()"),
            ("$($(VAR_A))", "$($(VAR_A))"),
            ("$(VAR_A)$", "A$"),
            ("$(VAR_A) $(VAR_A)", "A A"),
            ("héllo $(VAR_A) wörld", "héllo A wörld"),
            ("$é", "$é"),
            ("(VAR_A)", "(VAR_A)"),
            ("$(VAR_A)$$(VAR_B)$(VAR_C)", "A$(VAR_B)C"),
        ];
        let pairs = vars();
        for (input, expected) in cases {
            assert_eq!(
                expand_with_pairs(input, &pairs),
                *expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn later_pairs_win() {
        let pairs = vec![
            ("X".to_string(), "first".to_string()),
            ("X".to_string(), "second".to_string()),
        ];
        assert_eq!(expand_with_pairs("$(X)", &pairs), "second");
    }
}

//! `$(VAR)` references in `command`, `args`, env values and `subPathExpr`, expanded as the
//! kubelet does.
//!
//! * `$(NAME)` becomes the value of `NAME` when it is defined, and stays `$(NAME)` when not;
//! * `$$` is an escaped `$`, so `$$(NAME)` becomes the literal `$(NAME)`;
//! * any other `$` (a trailing one, `$x`, an unclosed `$(`) is kept as written.
//!
//! A manifest controls every value, and each value may reference earlier ones, so a short
//! manifest can double a value at every variable. Expansion is therefore bounded: no single
//! expanded value exceeds [`MAX_EXPANDED_VALUE_BYTES`], and all the expansions of one
//! container draw from one [`ExpansionBudget`] of [`MAX_CONTAINER_EXPANDED_BYTES`].

/// The largest single expanded value: 1.5 MiB, the API server's limit on a whole object
/// (etcd's request size), so no value the API server could have stored expands past it.
/// Fixed; a pod needing more would not be accepted by Kubernetes either.
pub const MAX_EXPANDED_VALUE_BYTES: usize = 3 * 512 * 1024;

/// The total of all expanded values of one container (its env values, or its command and
/// args): 4 MiB, twice Linux's default `ARG_MAX` for argv plus environment, so any container
/// a Linux node could start fits. Fixed.
pub const MAX_CONTAINER_EXPANDED_BYTES: usize = 4 * 1024 * 1024;

/// Why an expansion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpansionError {
    /// One expanded value would exceed [`MAX_EXPANDED_VALUE_BYTES`].
    #[error(
        "expanding $({reference}) makes the value larger than {limit} bytes \
         (the API server's object size limit); shorten the variables it references"
    )]
    ValueTooLarge {
        /// The reference being expanded when the limit was reached.
        reference: String,
        /// The limit.
        limit: usize,
    },
    /// The container's expansions together would exceed their budget.
    #[error(
        "expanding $({reference}) exceeds the container's total of {limit} expanded bytes \
         (MAX_CONTAINER_EXPANDED_BYTES); reference fewer or shorter variables"
    )]
    BudgetExhausted {
        /// The reference being expanded when the budget ran out.
        reference: String,
        /// The budget.
        limit: usize,
    },
}

/// Result type of this module.
pub type Result<T, E = ExpansionError> = std::result::Result<T, E>;

/// The bytes the expansions of one container may still produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpansionBudget {
    limit: usize,
    remaining: usize,
}

impl ExpansionBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            remaining: limit,
        }
    }

    /// A budget of [`MAX_CONTAINER_EXPANDED_BYTES`], for one container.
    pub fn per_container() -> Self {
        Self::new(MAX_CONTAINER_EXPANDED_BYTES)
    }

    fn spend(&mut self, bytes: usize, reference: &str) -> Result<()> {
        self.remaining =
            self.remaining
                .checked_sub(bytes)
                .ok_or_else(|| ExpansionError::BudgetExhausted {
                    reference: reference.to_string(),
                    limit: self.limit,
                })?;
        Ok(())
    }
}

/// Expands the `$(VAR)` references in `input`, looking names up with `lookup`; the bytes that
/// references add are charged to `budget`.
pub fn expand(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
    budget: &mut ExpansionBudget,
) -> Result<String> {
    let mut output = String::with_capacity(input.len().min(MAX_EXPANDED_VALUE_BYTES));
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let consumed = expand_reference(after, &lookup, &mut output, budget)?;
        rest = &after[consumed..];
    }
    output.push_str(rest);
    Ok(output)
}

/// Handles the text after one `$`: writes its expansion and returns the bytes it consumed.
fn expand_reference(
    after: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    output: &mut String,
    budget: &mut ExpansionBudget,
) -> Result<usize> {
    let consumed = match after.chars().next() {
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
                    Some(value) => push_value(output, &value, name, budget)?,
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
    };
    Ok(consumed)
}

/// Appends the value of `$(reference)`, within the value limit and the budget.
fn push_value(
    output: &mut String,
    value: &str,
    reference: &str,
    budget: &mut ExpansionBudget,
) -> Result<()> {
    if output.len().saturating_add(value.len()) > MAX_EXPANDED_VALUE_BYTES {
        return Err(ExpansionError::ValueTooLarge {
            reference: reference.to_string(),
            limit: MAX_EXPANDED_VALUE_BYTES,
        });
    }
    budget.spend(value.len(), reference)?;
    output.push_str(value);
    Ok(())
}

/// Expands with a list of `(name, value)` pairs; a later pair wins over an earlier one.
pub fn expand_with_pairs(
    input: &str,
    pairs: &[(String, String)],
    budget: &mut ExpansionBudget,
) -> Result<String> {
    let lookup = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    expand(input, lookup, budget)
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
                expand_with_pairs(input, &pairs, &mut ExpansionBudget::per_container()).unwrap(),
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
        let expanded = expand_with_pairs("$(X)", &pairs, &mut ExpansionBudget::per_container());
        assert_eq!(expanded.unwrap(), "second");
    }

    /// The doubling manifest (A=xx, B=$(A)$(A), ...) as env.rs resolves it: each value
    /// expanded against the earlier ones, all from one budget.
    fn expand_doubling(levels: usize, budget: usize) -> Result<Vec<(String, String)>> {
        let mut budget = ExpansionBudget::new(budget);
        let mut pairs = vec![("V0".to_string(), "xx".to_string())];
        for level in 1..levels {
            let input = format!("$(V{0})$(V{0})", level - 1);
            let value = expand_with_pairs(&input, &pairs, &mut budget)?;
            pairs.push((format!("V{level}"), value));
        }
        Ok(pairs)
    }

    #[test]
    fn doubling_references_hit_the_budget() {
        // V0..V5 add 4+8+16+32+64 bytes; the first $(V5) of V6 takes 64 more, past 200.
        let error = expand_doubling(64, 200).unwrap_err();
        assert_eq!(
            error,
            ExpansionError::BudgetExhausted {
                reference: "V5".to_string(),
                limit: 200
            }
        );
        assert!(error.to_string().contains("MAX_CONTAINER_EXPANDED_BYTES"));
        assert!(expand_doubling(6, 200).is_ok());
        let unbounded = expand_doubling(64, usize::MAX).unwrap_err();
        assert!(matches!(unbounded, ExpansionError::ValueTooLarge { .. }));
    }

    #[test]
    fn one_value_is_capped_at_the_object_size_limit() {
        let big = "x".repeat(MAX_EXPANDED_VALUE_BYTES / 2 + 1);
        let pairs = vec![("BIG".to_string(), big)];
        let mut budget = ExpansionBudget::new(usize::MAX);
        let error = expand_with_pairs("$(BIG)$(BIG)", &pairs, &mut budget).unwrap_err();
        assert_eq!(
            error,
            ExpansionError::ValueTooLarge {
                reference: "BIG".to_string(),
                limit: MAX_EXPANDED_VALUE_BYTES
            }
        );
        assert!(expand_with_pairs("$(BIG)", &pairs, &mut budget).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn pairs_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
            proptest::collection::vec(("[A-C]{1,2}", "[a$()A-C]{0,12}"), 0..6)
        }

        proptest! {
            #[test]
            fn expansion_properties(
                input in "[a$()A-C ]{0,40}",
                pairs in pairs_strategy(),
                limit in 0usize..64,
            ) {
                let mut budget = ExpansionBudget::new(limit);
                match expand_with_pairs(&input, &pairs, &mut budget) {
                    Ok(output) => {
                        // Literal text is kept; references add at most the budget.
                        prop_assert!(output.len() <= input.len() + limit);
                    }
                    Err(ExpansionError::BudgetExhausted { limit: l, .. }) => prop_assert_eq!(l, limit),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }

            #[test]
            fn escaped_dollar_properties(text in "[a-z()$]{0,30}") {
                // With no variables defined, `$$` becomes `$` and nothing else changes
                // except through `$$`.
                let input = text.replace('$', "$$");
                let mut budget = ExpansionBudget::per_container();
                prop_assert_eq!(expand_with_pairs(&input, &[], &mut budget).unwrap(), text);
            }

            #[test]
            fn arbitrary_input_properties(input in any::<String>()) {
                let pairs = vec![("A".to_string(), input.clone())];
                let mut budget = ExpansionBudget::per_container();
                let _ = expand_with_pairs(&input, &pairs, &mut budget);
            }
        }
    }
}

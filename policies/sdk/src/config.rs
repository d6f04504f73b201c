//! A typed view over a policy's `list<config-entry>`.

use crate::types::{ConfigEntry, PolicyError};

/// Read-only view over the `config` entries of an input.
///
/// Every getter takes a default for a missing key; a present but malformed
/// value is an error ([`PolicyError::InvalidConfig`] naming the key), so a
/// typo in an operator's config is refused rather than silently ignored.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    entries: &'a [ConfigEntry],
}

impl<'a> Config<'a> {
    /// Wraps the entries of an input's `config` field.
    pub fn new(entries: &'a [ConfigEntry]) -> Self {
        Self { entries }
    }

    /// The raw value of `key`, if present (the last entry wins on duplicates,
    /// as later configuration layers override earlier ones).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.entries.iter().rev().find(|e| e.key == key).map(|e| e.value.as_str())
    }

    /// The value of `key` as a string, or `default` when absent.
    pub fn get_str(&self, key: &str, default: &'a str) -> &'a str {
        self.raw(key).unwrap_or(default)
    }

    /// The value of `key` as an unsigned integer, or `default` when absent.
    pub fn get_u64(&self, key: &str, default: u64) -> Result<u64, PolicyError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => {
                v.trim().parse().map_err(|_| PolicyError::InvalidConfig(format!("`{key}` must be a non-negative integer, got `{v}`")))
            }
        }
    }

    /// The value of `key` as a boolean (`true`/`false`, `yes`/`no`, `1`/`0`),
    /// or `default` when absent.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, PolicyError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(PolicyError::InvalidConfig(format!("`{key}` must be `true` or `false`, got `{v}`"))),
            },
        }
    }

    /// The value of `key`, which must be one of `allowed`; `default` when
    /// absent.
    pub fn get_choice(&self, key: &str, allowed: &[&'a str], default: &'a str) -> Result<&'a str, PolicyError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => allowed.iter().copied().find(|a| *a == v).ok_or_else(|| {
                PolicyError::InvalidConfig(format!(
                    "`{key}` must be one of {}, got `{v}`",
                    allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<ConfigEntry> {
        pairs.iter().map(|(k, v)| ConfigEntry { key: (*k).into(), value: (*v).into() }).collect()
    }

    #[test]
    fn missing_keys_take_defaults() {
        let e = entries(&[]);
        let c = Config::new(&e);
        assert_eq!(c.get_u64("rpo_s", 3600), Ok(3600));
        assert_eq!(c.get_bool("allow_data_loss", false), Ok(false));
        assert_eq!(c.get_str("failback", "auto"), "auto");
    }

    #[test]
    fn present_values_are_parsed_and_last_wins() {
        let e = entries(&[("rpo_s", "10"), ("rpo_s", " 20 "), ("flag", "Yes")]);
        let c = Config::new(&e);
        assert_eq!(c.get_u64("rpo_s", 0), Ok(20));
        assert_eq!(c.get_bool("flag", false), Ok(true));
    }

    #[test]
    fn malformed_values_name_the_key() {
        let e = entries(&[("rpo_s", "an hour"), ("flag", "maybe"), ("failback", "sometimes")]);
        let c = Config::new(&e);
        match c.get_u64("rpo_s", 0) {
            Err(PolicyError::InvalidConfig(m)) => assert!(m.contains("`rpo_s`"), "{m}"),
            other => panic!("expected invalid-config, got {other:?}"),
        }
        assert!(matches!(c.get_bool("flag", false), Err(PolicyError::InvalidConfig(m)) if m.contains("`flag`")));
        assert!(matches!(
            c.get_choice("failback", &["auto", "manual"], "auto"),
            Err(PolicyError::InvalidConfig(m)) if m.contains("`failback`") && m.contains("`manual`")
        ));
    }
}

//! `authentication.usernames`: which login names the mode's rule may let in.

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::auth::DEFAULT_PLAUSIBLE_USERNAMES;

/// `authentication.usernames`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct UsernamesConfig {
    /// `plausible`: only the names in `plausible` (and those the static pairs spell
    /// out) can log in by the mode's rule, a wildcard pair or a public key; any other name is
    /// refused however often it is tried. `any`: every name can (a scanner that tries
    /// a random name then gets in, which no real server does).
    #[garde(skip)]
    pub policy: UsernamePolicy,
    /// The names a server like the persona has accounts for.
    #[garde(custom(login_names))]
    pub plausible: Vec<String>,
}

impl Default for UsernamesConfig {
    fn default() -> Self {
        Self {
            policy: UsernamePolicy::Plausible,
            plausible: DEFAULT_PLAUSIBLE_USERNAMES
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
        }
    }
}

/// `authentication.usernames.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernamePolicy {
    /// Only plausible names.
    Plausible,
    /// Any name.
    Any,
}

/// A name `useradd` on Debian accepts (its default NAME_REGEX, at most 32 bytes), so
/// that the account the box creates has exactly the name the client logged in with.
pub fn valid_login_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn login_names(names: &[String], _: &()) -> garde::Result {
    if names.is_empty() {
        return Err(garde::Error::new(
            "must name at least one login name (or set `policy: any`)",
        ));
    }
    if let Some(bad) = names.iter().find(|name| !valid_login_name(name)) {
        return Err(garde::Error::new(format!(
            "`{}` is not a login name: lower-case letters, digits, `_` and `-`, starting with a letter or `_`, at most 32 characters",
            bad.escape_debug()
        )));
    }
    Ok(())
}

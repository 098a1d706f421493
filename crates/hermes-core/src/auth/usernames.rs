//! Which login names the mode's rule may let in.
//!
//! `sticky` and `accept_after_failures` log in a pair the configuration never named.
//! Letting in any name gives the sensor away: a scanner tries a random name
//! (`user_a37`), gets a shell and sees `whoami` echo it, which no real server does.
//! So only names a real server plausibly has get that far: a list (the box's own
//! accounts and the names such servers carry), plus every name the static pairs
//! spell out. Everything else is refused like a wrong password, however often tried.

use std::collections::HashSet;

use crate::config::{UsernamePolicy, UsernamesConfig};

/// Names a small Linux server commonly has an account for: the box's own (`root`,
/// `admin`), cloud images' default users, and those of common services that get a
/// login shell. Debian's system accounts with `nologin` (www-data, backup, ...) are
/// left out: sshd refuses them on a real server too.
pub const DEFAULT_PLAUSIBLE_USERNAMES: &[&str] = &[
    "root",
    "admin",
    "administrator",
    "ubuntu",
    "debian",
    "pi",
    "user",
    "test",
    "guest",
    "support",
    "oracle",
    "postgres",
    "mysql",
    "git",
    "deploy",
    "dev",
    "devops",
    "ansible",
    "jenkins",
    "vagrant",
    "ec2-user",
    "azureuser",
    "centos",
    "tomcat",
    "hadoop",
    "minecraft",
    "steam",
    "ftpuser",
    "docker",
    "web",
];

/// The login names the mode's rule may let in.
#[derive(Debug, Clone)]
pub struct LoginNames {
    /// `None`: every name (the `any` policy).
    allowed: Option<HashSet<String>>,
}

impl LoginNames {
    /// From the configured policy and list, plus the exact names of the static pairs
    /// (a name the operator wrote down is one the server has).
    pub fn new<'a>(
        config: &'a UsernamesConfig,
        static_names: impl Iterator<Item = &'a str>,
    ) -> Self {
        let allowed = match config.policy {
            UsernamePolicy::Any => None,
            UsernamePolicy::Plausible => Some(
                config
                    .plausible
                    .iter()
                    .map(String::as_str)
                    .chain(static_names.filter(|name| !name.contains('*')))
                    .map(str::to_owned)
                    .collect(),
            ),
        };
        Self { allowed }
    }

    /// Whether `username` may log in by the mode's rule or a wildcard pair.
    pub fn admits(&self, username: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|names| names.contains(username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plausible() -> UsernamesConfig {
        UsernamesConfig::default()
    }

    #[test]
    fn the_default_list_admits_common_accounts_and_refuses_random_names() {
        let names = LoginNames::new(&plausible(), ["oracle2"].into_iter());
        for name in [
            "root", "admin", "ubuntu", "debian", "pi", "user", "test", "oracle",
        ] {
            assert!(names.admits(name), "{name}");
        }
        assert!(
            names.admits("oracle2"),
            "a static pair's name is the server's"
        );
        for name in ["user_a37", "xk3j9q", "Root", "root ", "", "admin\n", "zzzz"] {
            assert!(!names.admits(name), "{name:?}");
        }
    }

    #[test]
    fn wildcard_static_names_do_not_widen_the_list() {
        let names = LoginNames::new(&plausible(), ["*", "adm*"].into_iter());
        assert!(!names.admits("*"));
        assert!(!names.admits("admx"));
    }

    #[test]
    fn the_any_policy_admits_everything() {
        let config = UsernamesConfig {
            policy: UsernamePolicy::Any,
            ..UsernamesConfig::default()
        };
        let names = LoginNames::new(&config, std::iter::empty());
        assert!(names.admits("user_a37"));
    }

    #[test]
    fn the_default_list_is_valid_login_names() {
        for name in DEFAULT_PLAUSIBLE_USERNAMES {
            assert!(
                crate::config::valid_login_name(name),
                "{name} is not a login name"
            );
        }
    }
}

//! Names or numbers for users and groups, looked up once for everyone who needs
//! them: `uid`/`gid` (the privilege drop) and `chown-socket`.

use nix::unistd::{Gid, Group, Uid, User};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unable to find user {0}")]
    NoUser(String),
    #[error("unable to find group {0}")]
    NoGroup(String),
}

/// The account `spec` names (a name or a uid), which must exist: the privilege
/// drop needs its primary group.
pub fn user(spec: &str) -> Result<User, LookupError> {
    let found = match spec.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(spec),
    };
    found
        .ok()
        .flatten()
        .ok_or_else(|| LookupError::NoUser(spec.to_owned()))
}

/// A uid: a number is taken as is (it need not have a passwd entry, as for
/// `chown`), a name is looked up.
pub fn uid(spec: &str) -> Result<Uid, LookupError> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(spec) {
        Ok(Some(user)) => Ok(user.uid),
        _ => Err(LookupError::NoUser(spec.to_owned())),
    }
}

/// A gid: a number is taken as is, a name is looked up.
pub fn gid(spec: &str) -> Result<Gid, LookupError> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(spec) {
        Ok(Some(group)) => Ok(group.gid),
        _ => Err(LookupError::NoGroup(spec.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_unknowns() {
        assert_eq!(uid("65534").unwrap(), Uid::from_raw(65534));
        assert_eq!(gid("65533").unwrap(), Gid::from_raw(65533));
        assert_eq!(uid("root").unwrap(), Uid::from_raw(0));
        assert_eq!(user("0").unwrap().name, "root");
        assert_eq!(
            uid("no-such-user-amy").unwrap_err().to_string(),
            "unable to find user no-such-user-amy"
        );
        assert_eq!(
            gid("no-such-group-amy").unwrap_err().to_string(),
            "unable to find group no-such-group-amy"
        );
        // A uid with no passwd entry is no account to drop to.
        assert!(user("4000000001").is_err());
    }
}

//! Dropping root after the sockets are bound and the pidfile is written:
//! setgroups, setgid, setuid, in that order, so nothing is left to regain root.

use nix::unistd::{setgid, setgroups, setuid, Uid};

use crate::users::{self, LookupError};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        source: nix::Error,
    },
    #[error("setuid(0) still succeeds after dropping privileges: refusing to run")]
    StillRoot,
}

/// Drops to `uid`/`gid` (names or numbers). With only `uid`, the user's primary
/// group is used. Nothing happens when neither is set.
pub fn drop_to(uid: Option<&str>, gid: Option<&str>) -> Result<(), PrivilegeError> {
    let user = uid.map(users::user).transpose()?;
    let gid = match (gid, &user) {
        (Some(g), _) => Some(users::gid(g)?),
        (None, Some(u)) => Some(u.gid),
        (None, None) => None,
    };
    let sys = |op| move |source| PrivilegeError::Sys { op, source };
    if let Some(gid) = gid {
        // Supplementary groups exactly as configured: only the one group.
        if Uid::effective().is_root() {
            setgroups(&[gid]).map_err(sys("setgroups"))?;
        }
        setgid(gid).map_err(sys("setgid"))?;
    }
    if let Some(user) = user {
        setuid(user.uid).map_err(sys("setuid"))?;
        if !user.uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
            return Err(PrivilegeError::StillRoot);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_group_are_named_in_the_error() {
        assert_eq!(
            drop_to(Some("no-such-user-amy"), None)
                .unwrap_err()
                .to_string(),
            "unable to find user no-such-user-amy"
        );
        assert_eq!(
            drop_to(None, Some("no-such-group-amy"))
                .unwrap_err()
                .to_string(),
            "unable to find group no-such-group-amy"
        );
    }
}

//! Who the responder runs as: `--user USER[:GROUP]`, `--socket-group GROUP`, and, as php-fpm
//! does, a refusal to start as root without `--user`, so scripts never run as root by accident.
//!
//! Started as root, the responder creates its socket (owned by the user and the socket group,
//! so the web server's user can connect), then gives up root for good: supplementary groups,
//! group, user, in that order (after setuid nothing else could be changed).

use std::ffi::CString;
use std::path::Path;

use anyhow::{Context, bail};

/// An account the responder switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's name, for initgroups and messages.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// The group scripts run with: `:GROUP` from `--user`, else the user's primary group.
    pub gid: u32,
}

/// The resolved `--user` and `--socket-group`.
#[derive(Debug, Clone, Default)]
pub struct Privileges {
    /// `--user`: the account to switch to after the socket is placed.
    pub user: Option<Account>,
    /// `--socket-group`: the group of the socket file (else the user's group, when `--user`).
    pub socket_group: Option<u32>,
}

impl Privileges {
    /// Resolves the names (or numeric ids); refuses root without `--user`.
    pub fn resolve(user: Option<&str>, socket_group: Option<&str>) -> anyhow::Result<Privileges> {
        let user = user.map(parse_user).transpose()?;
        let socket_group = socket_group
            .map(|g| group_id(g).with_context(|| format!("--socket-group {g}")))
            .transpose()?;
        if user.is_none() && rustix::process::geteuid().is_root() {
            bail!(
                "refusing to run scripts as root: give --user USER[:GROUP], the account \
                 scripts run as (e.g. --user www-data), as php-fpm requires"
            );
        }
        Ok(Privileges { user, socket_group })
    }

    /// The owner and group a socket file we create gets (`None`: leave it as created).
    pub fn socket_owner(&self) -> (Option<u32>, Option<u32>) {
        let uid = self.user.as_ref().map(|u| u.uid);
        let gid = self.socket_group.or(self.user.as_ref().map(|u| u.gid));
        (uid, gid)
    }

    /// Gives the socket file its owner and group.
    pub fn place_socket(&self, path: &Path) -> anyhow::Result<()> {
        let (uid, gid) = self.socket_owner();
        if uid.is_none() && gid.is_none() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, uid, gid)
            .with_context(|| format!("giving {} to the socket's user and group", path.display()))
    }

    /// Switches to `--user` for good (nothing to do without it).
    pub fn drop_root(&self) -> anyhow::Result<()> {
        let Some(account) = &self.user else {
            return Ok(());
        };
        let euid = rustix::process::geteuid();
        if euid.as_raw() == account.uid && rustix::process::getegid().as_raw() == account.gid {
            return Ok(());
        }
        let name = CString::new(account.name.as_str()).context("--user contains NUL")?;
        // SAFETY: plain libc calls with a valid NUL-terminated name and ids. glibc applies
        // setgroups/setgid/setuid to every thread of the process (the runtime's too), where a
        // raw syscall would change the calling thread alone.
        let failed = unsafe {
            (euid.is_root() && libc::initgroups(name.as_ptr(), account.gid) != 0)
                || libc::setgid(account.gid) != 0
                || libc::setuid(account.uid) != 0
        };
        if failed {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "switching to --user {} (uid {}, gid {})",
                    account.name, account.uid, account.gid
                )
            });
        }
        // Had root been kept anywhere (a saved set-user-ID), getting it back would succeed.
        // SAFETY: a plain libc call; it fails (as it must) once root is gone.
        let regained = account.uid != 0 && unsafe { libc::setuid(0) } == 0;
        if regained {
            bail!(
                "root could be regained after switching to --user {}",
                account.name
            );
        }
        Ok(())
    }
}

/// `USER` or `USER:GROUP`, by name or number.
fn parse_user(spec: &str) -> anyhow::Result<Account> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (name, uid, primary) = user_entry(user).with_context(|| format!("--user {spec}"))?;
    let gid = match group {
        Some(g) => group_id(g).with_context(|| format!("--user {spec}"))?,
        None => primary,
    };
    Ok(Account { name, uid, gid })
}

/// Size of the buffer the reentrant lookups fill; entries longer than this are refused.
const LOOKUP_BUFFER: usize = 16 * 1024;

/// A user's name, uid and primary gid (NSS: /etc/passwd, LDAP, ...).
fn user_entry(user: &str) -> anyhow::Result<(String, u32, u32)> {
    let number = user.parse::<u32>().ok();
    let name = CString::new(user).context("a user name contains NUL")?;
    let mut buffer = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let (ptr, len) = (buffer.as_mut_ptr(), buffer.len());
    // SAFETY: getpw*_r get a valid name, entry, buffer and length, and fill `entry` with
    // pointers into `buffer`, which outlives every use of them below.
    let rc = unsafe {
        match number {
            Some(uid) => libc::getpwuid_r(uid, &mut entry, ptr, len, &mut found),
            None => libc::getpwnam_r(name.as_ptr(), &mut entry, ptr, len, &mut found),
        }
    };
    if rc != 0 || found.is_null() {
        bail!("no such user {user:?}");
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned();
    Ok((name, entry.pw_uid, entry.pw_gid))
}

/// A group's gid, by name or number.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group).context("a group name contains NUL")?;
    let mut buffer = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: an all-zero group is a valid value (null pointers, zero id).
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    let (ptr, len) = (buffer.as_mut_ptr(), buffer.len());
    // SAFETY: as in `user_entry`: valid arguments; the entry points into `buffer`.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut entry, ptr, len, &mut found) };
    if rc != 0 || found.is_null() {
        bail!("no such group {group:?}");
    }
    Ok(entry.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_group_by_name_or_number() {
        let root = parse_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(parse_user("0:0").unwrap().name, "root");
        assert!(parse_user("no-such-user-hc").is_err());
        assert!(parse_user("root:no-such-group-hc").is_err());
    }

    #[test]
    fn the_socket_goes_to_the_socket_group_else_the_users_group() {
        let account = Account {
            name: "www".into(),
            uid: 33,
            gid: 33,
        };
        let with_group = Privileges {
            user: Some(account.clone()),
            socket_group: Some(100),
        };
        assert_eq!(with_group.socket_owner(), (Some(33), Some(100)));
        let user_only = Privileges {
            user: Some(account),
            socket_group: None,
        };
        assert_eq!(user_only.socket_owner(), (Some(33), Some(33)));
        assert_eq!(Privileges::default().socket_owner(), (None, None));
    }
}

//! POSIX ACLs: access ACLs kept consistent with the mode bits, default ACLs
//! inherited at create.
//!
//! tresor stores `system.posix_acl_*` attributes as the kernel hands them over
//! (the `posix_acl_xattr` format: a u32 version 2, then 8-byte entries
//! `tag: u16, perm: u16, id: u32`, little-endian) so `rsync -A` round-trips
//! them. The mount asks for `FUSE_POSIX_ACL`: the kernel then checks
//! permissions against the ACLs (reading them through getxattr and caching
//! them) and leaves the rest to the filesystem, which is this module, as in
//! every disk filesystem: setting an access ACL sets the mode's owner, group
//! (from the mask entry if there is one) and other bits; a chmod updates those
//! entries of a stored ACL; an ACL equivalent to the mode is not stored. A
//! node created in a directory with a default ACL gets the mode the create
//! asked for masked by that ACL instead of the umask ([`inherit`], the
//! kernel's `posix_acl_create`), an access ACL made from it when it says more
//! than the mode, and, if it is a directory, the default ACL itself.

pub const ACCESS_ACL: &[u8] = b"system.posix_acl_access";
pub const DEFAULT_ACL: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

fn entries(acl: &[u8]) -> Option<impl Iterator<Item = (usize, u16, u16)> + '_> {
    if acl.len() < 4 || (acl.len() - 4) % 8 != 0 {
        return None;
    }
    if u32::from_le_bytes(acl[0..4].try_into().ok()?) != VERSION {
        return None;
    }
    Some((4..acl.len()).step_by(8).map(move |at| {
        let tag = u16::from_le_bytes([acl[at], acl[at + 1]]);
        let perm = u16::from_le_bytes([acl[at + 2], acl[at + 3]]);
        (at, tag, perm)
    }))
}

/// The `rwxrwxrwx` bits an access ACL implies; `None` if it is malformed or
/// lacks a required entry.
pub fn mode_bits(acl: &[u8]) -> Option<u32> {
    let (mut user, mut group, mut mask, mut other) = (None, None, None, None);
    for (_, tag, perm) in entries(acl)? {
        let p = (perm & 7) as u32;
        match tag {
            USER_OBJ => user = Some(p),
            GROUP_OBJ => group = Some(p),
            MASK => mask = Some(p),
            OTHER => other = Some(p),
            _ => {}
        }
    }
    Some((user? << 6) | (mask.or(group)? << 3) | other?)
}

/// True if the ACL says nothing the mode does not (only the three base entries).
pub fn is_minimal(acl: &[u8]) -> bool {
    entries(acl)
        .is_some_and(|mut e| e.all(|(_, tag, _)| matches!(tag, USER_OBJ | GROUP_OBJ | OTHER)))
}

/// The ACL with its owner, group-class and other entries set from `perm`.
pub fn with_mode(acl: &[u8], perm: u32) -> Option<Vec<u8>> {
    let has_mask = entries(acl)?.any(|(_, tag, _)| tag == MASK);
    let mut out = acl.to_vec();
    for (at, tag, _) in entries(acl)? {
        let bits = match tag {
            USER_OBJ => (perm >> 6) & 7,
            MASK => (perm >> 3) & 7,
            GROUP_OBJ if !has_mask => (perm >> 3) & 7,
            OTHER => perm & 7,
            _ => continue,
        } as u16;
        out[at + 2..at + 4].copy_from_slice(&bits.to_le_bytes());
    }
    Some(out)
}

/// What a new node in a directory with the default ACL `default` gets: its
/// mode (`mode` as the create asked for it, permission bits masked by the
/// ACL's owner, group-class and other entries; the type and setuid/setgid
/// bits kept) and its access ACL, `None` when it would say nothing the mode
/// does not. `None` overall if `default` is malformed (the caller then
/// applies the umask, as without a default ACL).
pub fn inherit(default: &[u8], mode: u32) -> Option<(u32, Option<Vec<u8>>)> {
    let mut acl = default.to_vec();
    let mut mode = mode;
    let (mut group_obj, mut mask, mut extended) = (None, None, false);
    let (mut has_user, mut has_other) = (false, false);
    for (at, tag, perm) in entries(default)? {
        match tag {
            USER_OBJ => {
                let p = perm & ((mode >> 6) & 7) as u16;
                acl[at + 2..at + 4].copy_from_slice(&p.to_le_bytes());
                mode &= ((p as u32) << 6) | !0o700;
                has_user = true;
            }
            OTHER => {
                let p = perm & (mode & 7) as u16;
                acl[at + 2..at + 4].copy_from_slice(&p.to_le_bytes());
                mode &= (p as u32) | !0o007;
                has_other = true;
            }
            GROUP_OBJ => group_obj = Some((at, perm)),
            MASK => {
                mask = Some((at, perm));
                extended = true;
            }
            USER | GROUP => extended = true,
            _ => return None,
        }
    }
    let (at, perm) = mask.or(group_obj)?;
    if !has_user || !has_other {
        return None;
    }
    let p = perm & ((mode >> 3) & 7) as u16;
    acl[at + 2..at + 4].copy_from_slice(&p.to_le_bytes());
    mode &= ((p as u32) << 3) | !0o070;
    Some((mode, extended.then_some(acl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn mask_sets_group_bits() {
        // setfacl -m u:1000:rwx,m::rwx on a 0640 file
        let a = acl(&[
            (USER_OBJ, 6, u32::MAX),
            (0x02, 7, 1000),
            (GROUP_OBJ, 4, u32::MAX),
            (MASK, 7, u32::MAX),
            (OTHER, 0, u32::MAX),
        ]);
        assert_eq!(mode_bits(&a), Some(0o670));
        assert!(!is_minimal(&a));
        let b = with_mode(&a, 0o751).unwrap();
        assert_eq!(mode_bits(&b), Some(0o751));
        // the group-owner entry keeps its own bits when a mask exists
        assert_eq!(
            entries(&b).unwrap().find(|e| e.1 == GROUP_OBJ).unwrap().2,
            4
        );
    }

    #[test]
    fn minimal_acl_is_the_mode() {
        let a = acl(&[
            (USER_OBJ, 7, u32::MAX),
            (GROUP_OBJ, 5, u32::MAX),
            (OTHER, 1, u32::MAX),
        ]);
        assert_eq!(mode_bits(&a), Some(0o751));
        assert!(is_minimal(&a));
    }

    #[test]
    fn inherit_masks_the_mode_with_the_default_acl() {
        // setfacl -d --set u::rwx,g::rwx,o::- ; mkdir (mode 0777, no umask)
        let d = acl(&[
            (USER_OBJ, 7, u32::MAX),
            (GROUP_OBJ, 7, u32::MAX),
            (OTHER, 0, u32::MAX),
        ]);
        assert_eq!(inherit(&d, 0o40777), Some((0o40770, None)));
        // open(O_CREAT, 0644): the ACL only takes bits away
        assert_eq!(inherit(&d, 0o100644), Some((0o100640, None)));
        // setgid kept
        assert_eq!(inherit(&d, 0o42777), Some((0o42770, None)));

        // setfacl -d -m u:101:rwx on a 0755 directory; mkdir by 0777
        let d = acl(&[
            (USER_OBJ, 7, u32::MAX),
            (USER, 7, 101),
            (GROUP_OBJ, 5, u32::MAX),
            (MASK, 7, u32::MAX),
            (OTHER, 5, u32::MAX),
        ]);
        let (mode, access) = inherit(&d, 0o40777).unwrap();
        assert_eq!(mode, 0o40775, "the mask entry gives the group bits");
        let access = access.expect("a named user entry needs an access ACL");
        assert_eq!(mode_bits(&access), Some(0o775));
        // a create mode of 0600 narrows the ACL's mask, not the named entry
        let (mode, access) = inherit(&d, 0o100600).unwrap();
        assert_eq!(mode, 0o100600);
        let access = access.unwrap();
        assert_eq!(mode_bits(&access), Some(0o600));
        assert_eq!(
            entries(&access).unwrap().find(|e| e.1 == USER).unwrap().2,
            7
        );
        assert_eq!(inherit(b"\x02\0\0\0", 0o777), None);
    }

    #[test]
    fn malformed_is_rejected() {
        assert_eq!(mode_bits(b"\x02\0\0\0\x01"), None);
        assert_eq!(mode_bits(&acl(&[(USER_OBJ, 7, 0)])), None);
        assert_eq!(mode_bits(b"\x01\0\0\0"), None);
    }
}

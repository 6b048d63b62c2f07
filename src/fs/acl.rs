//! POSIX access ACLs kept consistent with the mode bits.
//!
//! tresor stores `system.posix_acl_*` attributes as the kernel hands them over
//! (the `posix_acl_xattr` format: a u32 version 2, then 8-byte entries
//! `tag: u16, perm: u16, id: u32`, little-endian) so `rsync -A` round-trips
//! them. The kernel does not keep the mode and the access ACL in step for a
//! FUSE filesystem without `FUSE_POSIX_ACL`, so this module does what every
//! disk filesystem does: setting an access ACL sets the mode's owner, group
//! (from the mask entry if there is one) and other bits; a chmod updates those
//! entries of a stored ACL; an ACL equivalent to the mode is not stored.
//! Permission checks stay the kernel's (mode bits, `default_permissions`).

pub const ACCESS_ACL: &[u8] = b"system.posix_acl_access";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const GROUP_OBJ: u16 = 0x04;
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
    fn malformed_is_rejected() {
        assert_eq!(mode_bits(b"\x02\0\0\0\x01"), None);
        assert_eq!(mode_bits(&acl(&[(USER_OBJ, 7, 0)])), None);
        assert_eq!(mode_bits(b"\x01\0\0\0"), None);
    }
}

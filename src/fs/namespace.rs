//! The namespace: lookups, creation, links, renames, attributes, directory
//! listings and extended attributes. Data reads and writes are in
//! [`super::read`] and [`super::write`].

use super::*;

impl FsCore {
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if history::is_view(ino) {
            return self.view_getattr(ino);
        }
        // Take the file state first (lock order), then the index.
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let idx = self.data.index.lock();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if let Some(st) = guard.as_ref() {
            if st.size_dirty {
                a.size = st.size;
            }
        }
        if a.kind == FileKind::Regular {
            a.blocks = Self::data_blocks(&idx, ino, guard.as_deref())?;
        }
        Ok(a)
    }

    /// The entry `name` of directory `parent`. `.` and `..` are answered for
    /// the kernel's file-handle decoding (`FUSE_EXPORT_SUPPORT`): it asks
    /// for `.` of any inode number, file or directory, to find an inode it
    /// no longer caches, and for `..` of a directory to find its parent;
    /// an inode that no longer exists is ENOENT, which it reports as ESTALE.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if history::is_view(parent) {
            return self.view_lookup(parent, name);
        }
        if name == b"." {
            return self.getattr(parent);
        }
        let ino = {
            let idx = self.data.index.lock();
            if name == b".." {
                let p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
                if p.kind != FileKind::Directory {
                    return Err(FsError::NotDir);
                }
                let up = match parent {
                    ROOT_INO => ROOT_INO,
                    _ => idx.parent_of(parent)?.ok_or(FsError::NotFound)?,
                };
                drop(idx);
                return self.getattr(up);
            }
            let p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
            if p.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            match idx.lookup(parent, name)? {
                Some(ino) => ino,
                None => {
                    drop(idx);
                    return self
                        .history_root_lookup(parent, name)
                        .unwrap_or(Err(FsError::NotFound));
                }
            }
        };
        self.getattr(ino)
    }

    pub(super) fn new_inode_attr(
        &self,
        idx: &Index,
        caller: Caller,
        parent: &Attr,
        kind: FileKind,
        perm: u32,
    ) -> Attr {
        let now = Timestamp::now();
        let mut perm = perm & 0o7777;
        let mut gid = caller.gid;
        // BSD group semantics of a setgid directory.
        if parent.perm & libc::S_ISGID != 0 {
            gid = parent.gid;
            if kind == FileKind::Directory {
                perm |= libc::S_ISGID;
            }
        }
        let _ = idx;
        Attr {
            ino: 0,
            kind,
            perm,
            uid: caller.uid,
            gid,
            size: 0,
            blocks: 0,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    pub(super) fn touch_dir(idx: &Index, dir: &mut Attr, nlink_delta: i32) -> FsResult<()> {
        let now = Timestamp::now();
        dir.mtime = now;
        dir.ctime = now;
        dir.nlink = (dir.nlink as i64 + nlink_delta as i64).max(0) as u32;
        idx.set_attr(dir)?;
        Ok(())
    }

    pub(super) fn parent_dir(idx: &Index, parent: u64) -> FsResult<Attr> {
        history::refuse(parent)?;
        let p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
        if p.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if p.nlink == 0 {
            // removed while open (an orphan until its last handle closes)
            return Err(FsError::NotFound);
        }
        Ok(p)
    }

    /// Creates a node of any kind; `mode` carries the type bits.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        self.create_node(caller, parent, name, kind, mode, rdev, None)
    }

    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], perm: u32) -> FsResult<Attr> {
        self.create_node(caller, parent, name, FileKind::Directory, perm, 0, None)
    }

    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Attr> {
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        self.create_node(
            caller,
            parent,
            name,
            FileKind::Symlink,
            0o777,
            0,
            Some(target),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        let idx = self.index();
        self.create_node_in(&idx, caller, parent, name, kind, perm, rdev, target)
    }

    /// [`FsCore::create_node`] under an index lock the caller holds.
    #[allow(clippy::too_many_arguments)]
    fn create_node_in(
        &self,
        idx: &Index,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        check_name(name)?;
        let mut p = Self::parent_dir(idx, parent)?;
        if idx.lookup(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        // The directory's default ACL instead of the umask (symlinks take
        // neither: always 0777).
        let default_acl = match kind {
            FileKind::Symlink => None,
            _ => idx.xattr(parent, acl::DEFAULT_ACL)?,
        };
        let inherited = default_acl.as_deref().and_then(|d| acl::inherit(d, perm));
        let (perm, access_acl) = match (kind, inherited) {
            (FileKind::Symlink, _) => (perm, None),
            (_, Some((perm, access))) => (perm, access),
            (_, None) => (perm & !caller.umask, None),
        };
        let mut a = self.new_inode_attr(idx, caller, &p, kind, perm);
        a.rdev = rdev;
        if let Some(t) = target {
            a.size = t.len() as u64;
        }
        // As every later getattr reports it (index rows: size in 512-byte
        // units; regular files: their data extents, none yet). A symlink
        // that answered 0 here and 1 after a rename failed pjdfstest.
        a.blocks = a.size.div_ceil(512);
        a.ino = idx.create_inode(&a)?;
        if let Some(t) = target {
            idx.set_symlink(a.ino, t)?;
        }
        if let Some(access) = access_acl {
            idx.set_xattr(a.ino, acl::ACCESS_ACL, &access)?;
        }
        if let (FileKind::Directory, Some(d)) = (kind, &default_acl) {
            idx.set_xattr(a.ino, acl::DEFAULT_ACL, d)?;
        }
        idx.insert_dirent(parent, name, a.ino)?;
        Self::touch_dir(idx, &mut p, if kind == FileKind::Directory { 1 } else { 0 })?;
        Ok(a)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
    ) -> FsResult<(Attr, u64)> {
        let a = self.create_node(caller, parent, name, FileKind::Regular, perm, 0, None)?;
        let fh = self.open_inode(a.ino);
        Ok((a, fh))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        if history::is_view(ino) {
            return self.view_readlink(ino);
        }
        let idx = self.data.index.lock();
        idx.symlink(ino)?.ok_or(FsError::Invalid)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, newparent)?;
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind == FileKind::Directory {
            return Err(FsError::NotPermitted);
        }
        if idx.lookup(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        idx.insert_dirent(newparent, newname, ino)?;
        a.nlink += 1;
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Self::touch_dir(&idx, &mut p, 0)?;
        drop(idx);
        self.getattr(ino)
    }

    /// Drops one link of `ino`; deletes it when no link and no open handle remain.
    pub(super) fn drop_link(&self, idx: &Index, mut a: Attr) -> FsResult<()> {
        a.nlink = a.nlink.saturating_sub(if a.kind == FileKind::Directory {
            a.nlink
        } else {
            1
        });
        a.ctime = Timestamp::now();
        if a.nlink > 0 {
            idx.set_attr(&a)?;
            return Ok(());
        }
        // Not the FileState lock: the index lock is held here (lock order).
        let open = self.open_handles.lock().contains_key(&a.ino);
        if open {
            idx.set_attr(&a)?;
            idx.add_orphan(a.ino)?;
        } else {
            self.discard_file_state(a.ino);
            idx.delete_inode(a.ino)?;
        }
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, parent)?;
        let ino = idx.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        idx.remove_dirent(parent, name)?;
        Self::touch_dir(&idx, &mut p, 0)?;
        self.drop_link(&idx, a)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, parent)?;
        let ino = idx.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if !idx.dir_is_empty(ino)? {
            return Err(FsError::NotEmpty);
        }
        idx.remove_dirent(parent, name)?;
        Self::touch_dir(&idx, &mut p, -1)?;
        self.drop_link(&idx, a)
    }

    /// Is `dir` equal to `ancestor` or below it?
    pub(super) fn is_within(idx: &Index, mut dir: u64, ancestor: u64) -> FsResult<bool> {
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            match idx.parent_of(dir)? {
                Some(p) => dir = p,
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        let idx = self.index();
        self.rename_in(&idx, parent, name, newparent, newname, mode)
    }

    /// `renameat2(RENAME_WHITEOUT)`, as overlayfs asks of its upper layer:
    /// the rename plus a whiteout (a character device 0/0, mode 0) left at
    /// the old name, under one index lock, so no commit and no lookup sees
    /// the old name missing in between.
    pub fn rename_whiteout(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> FsResult<Attr> {
        if mode == RenameMode::Exchange {
            return Err(FsError::Invalid);
        }
        let idx = self.index();
        self.rename_in(&idx, parent, name, newparent, newname, mode)?;
        // the whiteout ignores the umask and any default ACL: mode 0
        let caller = Caller { umask: 0, ..caller };
        let mut a = self.new_inode_attr(
            &idx,
            caller,
            &Self::parent_dir(&idx, parent)?,
            FileKind::CharDevice,
            0,
        );
        a.rdev = 0;
        a.ino = idx.create_inode(&a)?;
        idx.insert_dirent(parent, name, a.ino)?;
        Ok(a)
    }

    fn rename_in(
        &self,
        idx: &Index,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(newname)?;
        Self::parent_dir(idx, parent)?;
        Self::parent_dir(idx, newparent)?;
        let src_ino = idx.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let mut src = idx.attr(src_ino)?.ok_or(FsError::NotFound)?;
        let dst_ino = idx.lookup(newparent, newname)?;
        let now = Timestamp::now();

        if src.kind == FileKind::Directory
            && parent != newparent
            && Self::is_within(idx, newparent, src_ino)?
        {
            return Err(FsError::Invalid);
        }

        match (mode, dst_ino) {
            (RenameMode::Exchange, None) => return Err(FsError::NotFound),
            (RenameMode::NoReplace, Some(_)) => return Err(FsError::Exists),
            (RenameMode::Exchange, Some(dst_ino)) => {
                let mut dst = idx.attr(dst_ino)?.ok_or(FsError::NotFound)?;
                if dst.kind == FileKind::Directory
                    && parent != newparent
                    && Self::is_within(idx, parent, dst_ino)?
                {
                    return Err(FsError::Invalid);
                }
                idx.retarget_dirent(parent, name, dst_ino)?;
                idx.retarget_dirent(newparent, newname, src_ino)?;
                if parent != newparent {
                    let src_dir = (src.kind == FileKind::Directory) as i32;
                    let dst_dir = (dst.kind == FileKind::Directory) as i32;
                    let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
                    Self::touch_dir(idx, &mut p, dst_dir - src_dir)?;
                    let mut np = idx.attr(newparent)?.ok_or(FsError::NotFound)?;
                    Self::touch_dir(idx, &mut np, src_dir - dst_dir)?;
                } else {
                    let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
                    Self::touch_dir(idx, &mut p, 0)?;
                }
                src.ctime = now;
                dst.ctime = now;
                idx.set_attr(&src)?;
                idx.set_attr(&dst)?;
                return Ok(());
            }
            _ => {}
        }

        if let Some(dst_ino) = dst_ino {
            if dst_ino == src_ino {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
            let dst = idx.attr(dst_ino)?.ok_or(FsError::NotFound)?;
            match (
                src.kind == FileKind::Directory,
                dst.kind == FileKind::Directory,
            ) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    if !idx.dir_is_empty(dst_ino)? {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
            idx.remove_dirent(newparent, newname)?;
            if dst.kind == FileKind::Directory {
                let mut np = idx.attr(newparent)?.ok_or(FsError::NotFound)?;
                Self::touch_dir(idx, &mut np, -1)?;
            }
            self.drop_link(idx, dst)?;
        }
        // In place: the entry keeps its readdir cursor (see move_dirent).
        idx.move_dirent(parent, name, newparent, newname)?;
        let is_dir = (src.kind == FileKind::Directory) as i32;
        if parent != newparent {
            let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
            Self::touch_dir(idx, &mut p, -is_dir)?;
            let mut np = idx.attr(newparent)?.ok_or(FsError::NotFound)?;
            Self::touch_dir(idx, &mut np, is_dir)?;
        } else {
            let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
            Self::touch_dir(idx, &mut p, 0)?;
        }
        src.ctime = now;
        idx.set_attr(&src)?;
        Ok(())
    }

    /// Before a write, truncate or fallocate by `caller`: clears the setgid
    /// bit of a file whose setgid bit has no group-execute bit beside it
    /// when the caller is neither in the file's group nor root. The kernel's
    /// FUSE code clears S_ISUID and a group-executable S_ISGID itself
    /// (through a setattr) but leaves this case, which disk filesystems
    /// clear (`setattr_should_drop_sgid`; xfstests generic/683-685).
    /// True if it cleared the bit (the kernel's cached mode is then stale).
    pub fn clear_setgid_for(&self, caller: Caller, ino: u64) -> FsResult<bool> {
        if caller.privileged() {
            return Ok(false);
        }
        let idx = self.data.index.lock();
        let Some(mut a) = idx.attr(ino)? else {
            return Ok(false);
        };
        let sgid_only = a.perm & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID;
        if a.kind != FileKind::Regular || !sgid_only || caller.in_group(a.gid) {
            return Ok(false);
        }
        drop(idx);
        let idx = self.index();
        a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        a.perm &= !libc::S_ISGID;
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Ok(true)
    }

    pub fn setattr(&self, ino: u64, s: SetAttr) -> FsResult<Attr> {
        history::refuse(ino)?;
        if let Some(size) = s.size {
            if size > MAX_FILE_SIZE {
                return Err(FsError::TooBig);
            }
            self.truncate(ino, size)?;
        }
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if let Some(st) = guard.as_ref() {
            if st.size_dirty {
                a.size = st.size;
            }
        }
        let now = Timestamp::now();
        if s.size.is_some() && a.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        if let Some(mode) = s.mode {
            a.perm = mode & 0o7777;
            if let Some(old) = idx.xattr(ino, acl::ACCESS_ACL)? {
                if let Some(new) = acl::with_mode(&old, a.perm) {
                    idx.set_xattr(ino, acl::ACCESS_ACL, &new)?;
                }
            }
        }
        if let Some(uid) = s.uid {
            a.uid = uid;
        }
        if let Some(gid) = s.gid {
            a.gid = gid;
        }
        let resolve = |t: TimeSet| match t {
            TimeSet::Now => now,
            TimeSet::At(ts) => ts,
        };
        if let Some(t) = s.atime {
            a.atime = resolve(t);
        }
        if let Some(t) = s.mtime {
            a.mtime = resolve(t);
        } else if s.size.is_some() {
            a.mtime = now;
        }
        a.ctime = s.ctime.unwrap_or(now);
        idx.set_attr(&a)?;
        if a.kind == FileKind::Regular {
            a.blocks = Self::data_blocks(&idx, ino, guard.as_deref())?;
        }
        Ok(a)
    }

    /// Entries after cursor `after` (0 = from the start), including `.` and
    /// `..` at cursors 1 and 2; stored entries use cursor id + 2.
    pub fn readdir(&self, ino: u64, after: u64, limit: usize) -> FsResult<Vec<DirEntry>> {
        if history::is_view(ino) {
            return self.view_readdir(ino, after, limit);
        }
        let idx = self.data.index.lock();
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        let mut out = Vec::new();
        if after < 1 {
            out.push(DirEntry {
                cursor: 1,
                name: b".".to_vec(),
                ino,
                kind: FileKind::Directory,
            });
        }
        if after < 2 {
            let parent = if ino == ROOT_INO {
                ROOT_INO
            } else {
                idx.parent_of(ino)?.unwrap_or(ROOT_INO)
            };
            out.push(DirEntry {
                cursor: 2,
                name: b"..".to_vec(),
                ino: parent,
                kind: FileKind::Directory,
            });
        }
        let rest = idx.read_dir(ino, after.saturating_sub(2), limit)?;
        out.extend(rest.into_iter().map(|mut e| {
            e.cursor += 2;
            e
        }));
        Ok(out)
    }

    /// [`FsCore::readdir`] with each entry's attributes, as `getattr`
    /// gives them (`readdirplus`). The stored attributes of a page come
    /// from one statement; `.`, `..` and files with open state (unflushed
    /// size or data) go through `getattr`. An entry removed meanwhile is
    /// left out.
    pub fn readdir_plus(
        &self,
        ino: u64,
        after: u64,
        limit: usize,
    ) -> FsResult<Vec<(DirEntry, Attr)>> {
        let from_getattr = |entries: Vec<DirEntry>| {
            entries
                .into_iter()
                .filter_map(|e| self.getattr(e.ino).ok().map(|a| (e, a)))
                .collect::<Vec<_>>()
        };
        if history::is_view(ino) {
            return Ok(from_getattr(self.view_readdir(ino, after, limit)?));
        }
        let mut out = if after < 2 {
            // `.` and `..` only (a limit of 0 reads no stored entry).
            from_getattr(self.readdir(ino, after, 0)?)
        } else {
            Vec::new()
        };
        let rows = {
            let idx = self.data.index.lock();
            let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
            if a.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            idx.read_dir_plus(
                ino,
                after.saturating_sub(2),
                limit.saturating_sub(out.len()),
            )?
        };
        for (mut e, a) in rows {
            e.cursor += 2;
            // Open state overrides the stored size and blocks: take the
            // file state first, then the index (lock order).
            let a = if self.file_state(e.ino).is_some() {
                match self.getattr(e.ino) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            } else {
                a
            };
            out.push((e, a));
        }
        Ok(out)
    }

    /// An absent `security.selinux` label is EOPNOTSUPP, not ENODATA: `ls
    /// -l` asks for it on every file (a FUSE round trip each time; the
    /// kernel caches no xattr but ACLs) unless the filesystem says it has
    /// no labels, which `ls` then remembers for the whole mount. A label
    /// that was set is returned as usual.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if history::is_view(ino) {
            return self.view_getxattr(ino, name);
        }
        let idx = self.data.index.lock();
        idx.attr(ino)?.ok_or(FsError::NotFound)?;
        match idx.xattr(ino, name)? {
            Some(v) => Ok(v),
            None if name == b"security.selinux" => Err(FsError::NotSupported),
            None => Err(FsError::NoAttr),
        }
    }

    /// `flags`: XATTR_CREATE / XATTR_REPLACE semantics. Setting an access ACL
    /// sets the mode from it and, when the caller is not in the file's group
    /// (and not root), clears the setgid bit, as a chmod by them would.
    pub fn setxattr(
        &self,
        caller: Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        if name.is_empty() || name.len() > 255 {
            return Err(if name.is_empty() {
                FsError::Invalid
            } else {
                FsError::Range
            });
        }
        if value.len() > 65536 {
            return Err(FsError::TooBig);
        }
        history::refuse(ino)?;
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        let exists = idx.xattr(ino, name)?.is_some();
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        if name == acl::ACCESS_ACL {
            let bits = acl::mode_bits(value).ok_or(FsError::Invalid)?;
            a.perm = (a.perm & !0o777) | bits;
            if a.perm & libc::S_ISGID != 0 && !caller.in_group(a.gid) {
                a.perm &= !libc::S_ISGID;
            }
            if acl::is_minimal(value) {
                // Equivalent to the mode: nothing to store (as ext4 does).
                idx.remove_xattr(ino, name)?;
            } else {
                idx.set_xattr(ino, name, value)?;
            }
        } else if name == acl::DEFAULT_ACL {
            // (The kernel refuses one on a non-directory before it gets here.)
            acl::mode_bits(value).ok_or(FsError::Invalid)?;
            idx.set_xattr(ino, name, value)?;
        } else {
            idx.set_xattr(ino, name, value)?;
        }
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Ok(())
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let names = if history::is_view(ino) {
            self.view_xattr_names(ino)?
        } else {
            let idx = self.data.index.lock();
            idx.attr(ino)?.ok_or(FsError::NotFound)?;
            idx.xattr_names(ino)?
        };
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        history::refuse(ino)?;
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if !idx.remove_xattr(ino, name)? {
            return Err(FsError::NoAttr);
        }
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Ok(())
    }

    pub fn statfs(&self) -> FsResult<FsStats> {
        let files = self.data.index.lock().inode_count()?;
        let (blocks, bfree, bavail, bsize) = match nix::sys::statvfs::statvfs(&self.statfs_path) {
            Ok(s) => (
                s.blocks() * s.fragment_size() / 4096,
                s.blocks_free() * s.fragment_size() / 4096,
                s.blocks_available() * s.fragment_size() / 4096,
                4096,
            ),
            Err(_) => (0, 0, 0, 4096),
        };
        Ok(FsStats {
            blocks,
            bfree,
            bavail,
            files: files + 1_000_000,
            ffree: 1_000_000,
            bsize,
        })
    }
}

//! `tresor verify [--data]`: is every pack where the index says it is, and
//! (with `--data`) does every chunk in it still authenticate?
//!
//! For the local store and every configured backend (or the one named by
//! `--backend`), the pack objects under `packs/` are listed and compared
//! with one snapshot of the index:
//! - **missing**: the index says the location holds the pack (local store:
//!   a stored pack not in `evicted`; a backend: a `placements` row) but
//!   there is no object;
//! - **size differs** from `packs.size` (truncated or extended);
//! - **unreferenced**: an object no stored pack names (harmless; garbage
//!   collection's business).
//!
//! With `--data` every expected pack (and every present copy of a known
//! pack) is downloaded, one at a time (memory: one pack, ≤ ~21 MiB, plus the
//! chunks being opened), its sealed trailer is opened and compared with the
//! index, and every chunk the index places in it is opened (AEAD with its
//! AAD, then the keyed hash must equal the chunk id) — the same code the
//! read path uses, so `verify --data` passing means every read succeeds.
//!
//! Damage is reported per pack copy, with the files whose extents use a
//! damaged chunk (chunk → extents → inode → path). Without `--data` only a
//! missing pack, or chunks beyond the end of a short one, are known to be
//! lost; a pack whose size differs is reported even if no file is known to
//! be affected (run `--data` to find out).
//!
//! The index is opened read-only (`Index::open_read_only`) inside one read
//! transaction, so `verify` works the same on an unmounted vault and next
//! to a running daemon (WAL readers never block the writer). On a mounted
//! vault the daemon may evict a pack between the snapshot and the listing;
//! a local pack found missing is therefore checked again against a fresh
//! snapshot before it is reported.
//!
//! Exit codes: 0 everything checked is intact, [`exit::DAMAGED`] (4) some
//! pack is missing or damaged, 1 something could not be checked (a backend
//! unreachable, …), 3 wrong passphrase.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::chunk::pack::{read_trailer, PackId};
use crate::chunk::seal::{ChunkId, ChunkSealer};
use crate::index::{ChunkLocation, Index};
use crate::progress::Progress;
use crate::remote::backend::{self, Credentials, VaultConfig};
use crate::remote::integrity::{self, RootReport};
use crate::remote::snapshot::SnapshotCrypto;
use crate::store::Store;
use crate::vault::keys::SecretKey;
use crate::vault::{self, UnlockedVault, VaultPaths};

/// What `tresor verify` was asked to do.
pub struct VerifyOpts {
    pub data: bool,
    /// Only this location (a backend name, or `local`).
    pub backend: Option<String>,
    pub quiet: bool,
    pub json: bool,
}

/// The name `--backend` takes for the local store.
pub const LOCAL: &str = "local";

/// One damaged copy of a pack.
#[derive(Serialize, Clone)]
struct DamagedPack {
    location: String,
    pack: String,
    problems: Vec<String>,
    chunks: usize,
    damaged_chunks: usize,
    /// Files whose data uses a damaged chunk (sorted).
    files: Vec<String>,
}

#[derive(Serialize, Default)]
struct LocationReport {
    name: String,
    packs_expected: usize,
    packs_checked: usize,
    bytes_checked: u64,
    missing: usize,
    size_differs: usize,
    unreferenced: Vec<String>,
    damaged: Vec<DamagedPack>,
    /// A backend's root: its newest index snapshot whole, its key file
    /// this vault's (`remote/integrity.rs`); `None` for the local store.
    root: Option<RootReport>,
    /// Set when the location could not be checked (unreachable, …).
    error: Option<String>,
}

/// A stored pack as the index knows it.
#[derive(Clone, Copy)]
struct PackRow {
    number: u64,
    name: [u8; 16],
    size: u64,
}

struct Location {
    name: String,
    store: Store,
    /// Pack numbers the index says this location holds.
    expected: HashSet<u64>,
    local: bool,
}

impl Location {
    fn root_report(&self, crypto: &SnapshotCrypto) -> Option<RootReport> {
        (!self.local).then(|| integrity::check_root(&self.name, &self.store, crypto))
    }
}

/// What checking one pack object found.
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    bad_chunks: HashSet<ChunkId>,
}

/// Checks a complete pack object against the chunk rows the index has for
/// it: size, the sealed trailer (bound to the pack's name, so a swapped
/// object fails) and every chunk.
fn check_object(
    pack: &PackRow,
    object: &[u8],
    chunks: &[(ChunkId, ChunkLocation)],
    pack_key: &SecretKey,
    sealer: &ChunkSealer,
) -> Findings {
    let mut f = Findings::default();
    if object.len() as u64 != pack.size {
        f.problems.push(format!(
            "object is {} bytes, the index says {}",
            object.len(),
            pack.size
        ));
    }
    match read_trailer(PackId(pack.name), object, pack_key) {
        Ok(entries) => {
            let by_id: HashMap<ChunkId, _> = entries.iter().map(|e| (e.id, e)).collect();
            let disagree = chunks
                .iter()
                .filter(|(id, loc)| {
                    by_id.get(id).is_none_or(|e| {
                        e.offset != loc.offset
                            || e.sealed_len != loc.sealed_len
                            || e.plain_len != loc.plain_len
                    })
                })
                .count();
            if disagree > 0 {
                f.problems.push(format!(
                    "the trailer disagrees with the index about {disagree} chunk(s)"
                ));
            }
        }
        Err(e) => f.problems.push(format!("trailer: {e}")),
    }
    let bad: Vec<ChunkId> = chunks
        .par_iter()
        .filter(|(id, loc)| {
            let start = loc.offset as usize;
            let end = start.saturating_add(loc.sealed_len as usize);
            match object.get(start..end) {
                Some(sealed) => sealer.open(id, sealed).is_err(),
                None => true,
            }
        })
        .map(|(id, _)| *id)
        .collect();
    if !bad.is_empty() {
        f.problems.push(format!(
            "{} of {} chunk(s) fail authentication or are cut off",
            bad.len(),
            chunks.len()
        ));
    }
    f.bad_chunks = bad.into_iter().collect();
    f
}

/// Checks every pack copy of an unlocked vault, prints the report and
/// raises `Error::Damaged` when a copy is missing or damaged.
pub fn run(paths: &VaultPaths, unlocked: &UnlockedVault, opts: VerifyOpts) -> Result<()> {
    let config = VaultConfig::load(&paths.root)?;
    if let Some(b) = &opts.backend {
        if b != LOCAL && config.backend(b).is_none() {
            let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
            return Err(crate::error::usage(format!(
                "no backend named {b:?}; configured: {} (or `{LOCAL}` for the local store)",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    let mounted = vault::is_mounted(paths);
    let index = Index::open_read_only(&paths.index(), &unlocked.subkeys.index)
        .context("cannot open the index")?;
    index.begin_snapshot()?;
    let packs: Vec<PackRow> = index
        .stored_packs()?
        .into_iter()
        .map(|(number, name, size)| PackRow { number, name, size })
        .collect();
    let by_name: HashMap<[u8; 16], PackRow> = packs.iter().map(|p| (p.name, *p)).collect();
    let by_number: HashMap<u64, PackRow> = packs.iter().map(|p| (p.number, *p)).collect();

    // The locations to check.
    let mut locations = Vec::new();
    let wanted = |name: &str| opts.backend.as_deref().is_none_or(|b| b == name);
    if wanted(LOCAL) {
        let evicted = index.evicted_packs()?;
        locations.push(Location {
            name: LOCAL.into(),
            store: Store::open_local(&paths.store())?,
            expected: packs
                .iter()
                .map(|p| p.number)
                .filter(|n| !evicted.contains(n))
                .collect(),
            local: true,
        });
    }
    let runtime = Arc::new(crate::store::new_runtime("tresor-verify")?);
    let creds = Credentials::load(&paths.root)?;
    let mut reports: Vec<LocationReport> = Vec::new();
    for b in config.backends.iter().filter(|b| wanted(&b.name)) {
        let op = match backend::build_operator(b, &creds.for_backend(&b.name)) {
            Ok(op) => op,
            Err(e) => {
                reports.push(LocationReport {
                    name: b.name.clone(),
                    error: Some(format!("{e:#}")),
                    ..Default::default()
                });
                continue;
            }
        };
        locations.push(Location {
            name: b.name.clone(),
            store: Store::remote(op, runtime.clone()),
            expected: index.placed_packs(&b.id)?,
            local: false,
        });
    }

    // Phase 1: list every location and compare with the index.
    struct Work<'a> {
        loc: &'a Location,
        report: usize,
        /// (pack, present size); None = missing.
        packs: Vec<(PackRow, Option<u64>)>,
    }
    let mut work = Vec::new();
    let crypto = SnapshotCrypto::new(&unlocked.subkeys.snapshot, unlocked.key_file.vault_id());
    for loc in &locations {
        let mut report = LocationReport {
            name: loc.name.clone(),
            packs_expected: loc.expected.len(),
            root: loc.root_report(&crypto),
            ..Default::default()
        };
        let listed = match loc.store.list_sizes("packs/") {
            Ok(l) => l,
            Err(e) => {
                report.error = Some(format!("cannot list packs/: {e}"));
                reports.push(report);
                continue;
            }
        };
        let mut present: HashMap<u64, u64> = HashMap::new();
        for (path, size) in listed {
            let name = path
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".pack"))
                .and_then(PackId::from_hex)
                .filter(|id| PackId(id.0).object_path() == path);
            match name.and_then(|id| by_name.get(&id.0)) {
                Some(p) => {
                    present.insert(p.number, size);
                }
                None => report.unreferenced.push(path),
            }
        }
        let mut check: Vec<u64> = loc
            .expected
            .iter()
            .copied()
            .chain(present.keys().copied())
            .collect::<HashSet<u64>>()
            .into_iter()
            .collect();
        check.sort_unstable();
        let mut list = Vec::new();
        for n in check {
            let Some(p) = by_number.get(&n) else { continue };
            list.push((*p, present.get(&n).copied()));
        }
        reports.push(report);
        work.push(Work {
            loc,
            report: reports.len() - 1,
            packs: list,
        });
    }

    // Phase 2: judge every pack (downloading it with --data).
    let sealer = ChunkSealer::new(&unlocked.subkeys);
    let pack_key = &unlocked.subkeys.pack;
    let (bytes_total, packs_total) = if opts.data {
        work.iter()
            .flat_map(|w| w.packs.iter())
            .filter_map(|(_, size)| *size)
            .fold((0u64, 0usize), |(b, n), s| (b + s, n + 1))
    } else {
        (0, 0)
    };
    let progress = Progress::new(
        opts.quiet || opts.json || !opts.data,
        "verifying {bar:30} {bytes}/{total_bytes} {msg} {bytes_per_sec} ETA {eta}",
        |done, _, packs| format!("verify: {packs} ({}) checked", crate::progress::human(done)),
    );
    let (mut bytes_done, mut packs_done) = (0u64, 0usize);
    let mut recheck_local: Vec<(usize, usize)> = Vec::new();
    for w in &work {
        for (pack, present) in &w.packs {
            let path = PackId(pack.name).object_path();
            // A pack present at its indexed size needs its chunks only for
            // --data: reading them per pack costs one index page per chunk
            // once the chunks of a pack are scattered (after a repack) and
            // the table outgrows SQLite's cache (255 s at a million files).
            let intact = matches!(present, Some(size) if !opts.data && *size == pack.size);
            let chunks = if intact {
                Vec::new()
            } else {
                index.chunks_in_pack(pack.number)?
            };
            let all: HashSet<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
            let findings = match present {
                None => Findings {
                    problems: vec!["missing".into()],
                    bad_chunks: all,
                },
                Some(size) if opts.data => {
                    // The index knows how long the pack is; a longer object is not read.
                    let max = match pack.size {
                        0 => crate::chunk::pack::MAX_PACK_LEN,
                        n => n,
                    };
                    let got = w.loc.store.read_all(&path, max);
                    bytes_done += size;
                    packs_done += 1;
                    progress.set_message(format!("{packs_done} of {packs_total} packs"));
                    progress.update(bytes_done, bytes_total);
                    match got {
                        Ok(object) => check_object(pack, &object, &chunks, pack_key, &sealer),
                        Err(e) if e.is_not_found() => Findings {
                            problems: vec!["missing (disappeared while being checked)".into()],
                            bad_chunks: all,
                        },
                        Err(crate::store::StoreError::TooLarge { max, .. }) => Findings {
                            problems: vec![format!(
                                "object is longer than the {max} bytes the index says; not read"
                            )],
                            bad_chunks: all,
                        },
                        Err(e) => {
                            let r = &mut reports[w.report];
                            r.error
                                .get_or_insert_with(|| format!("cannot read {path}: {e}"));
                            continue;
                        }
                    }
                }
                Some(size) if *size != pack.size => Findings {
                    problems: vec![format!(
                        "object is {size} bytes, the index says {}",
                        pack.size
                    )],
                    bad_chunks: chunks
                        .iter()
                        .filter(|(_, l)| l.offset + u64::from(l.sealed_len) > *size)
                        .map(|(id, _)| *id)
                        .collect(),
                },
                Some(_) => Findings::default(),
            };
            let r = &mut reports[w.report];
            if present.is_some() {
                r.packs_checked += 1;
                if opts.data {
                    r.bytes_checked += present.unwrap_or(0);
                }
            }
            if present.is_some_and(|s| s != pack.size) {
                r.size_differs += 1;
            }
            if findings.problems.is_empty() {
                continue;
            }
            if present.is_none() || findings.problems[0].starts_with("missing") {
                r.missing += 1;
                if w.loc.local && mounted {
                    recheck_local.push((w.report, r.damaged.len()));
                }
            }
            let mut files = Vec::new();
            for ino in index.inodes_using(pack.number, &findings.bad_chunks)? {
                files.push(String::from_utf8_lossy(&index.path_of(ino)?).into_owned());
            }
            files.sort();
            r.damaged.push(DamagedPack {
                location: w.loc.name.clone(),
                pack: path,
                problems: findings.problems,
                chunks: chunks.len(),
                damaged_chunks: findings.bad_chunks.len(),
                files,
            });
        }
    }
    progress.finish();

    // A mounted daemon may have evicted a pack after the snapshot.
    if !recheck_local.is_empty() {
        let fresh = Index::open_read_only(&paths.index(), &unlocked.subkeys.index)?;
        let evicted = fresh.evicted_packs()?;
        let names: HashMap<String, u64> = packs
            .iter()
            .map(|p| (PackId(p.name).object_path(), p.number))
            .collect();
        for (ri, di) in recheck_local.into_iter().rev() {
            let r = &mut reports[ri];
            let gone = names
                .get(&r.damaged[di].pack)
                .is_some_and(|n| evicted.contains(n));
            if gone {
                r.damaged.remove(di);
                r.missing -= 1;
            }
        }
    }

    let damaged: Vec<&DamagedPack> = reports.iter().flat_map(|r| r.damaged.iter()).collect();
    let files: Vec<String> = damaged
        .iter()
        .flat_map(|d| d.files.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let errors: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            r.error
                .as_ref()
                .or(r.root.as_ref().and_then(|root| root.error.as_ref()))
                .map(|e| format!("{}: {e}", r.name))
        })
        .collect();
    let roots: Vec<RootReport> = reports.iter().filter_map(|r| r.root.clone()).collect();
    let root_error = integrity::error_of(&roots, false);
    if opts.json {
        println!(
            "{}",
            json!({
                "ok": damaged.is_empty() && errors.is_empty() && root_error.is_none(),
                "data": opts.data,
                "mounted": mounted,
                "locations": reports,
                "damaged_packs": damaged.len(),
                "damaged_files": files,
            })
        );
    } else if !opts.quiet {
        print_human(&reports, opts.data, &files);
    } else {
        for d in &damaged {
            for f in &d.files {
                println!("{f}");
            }
        }
    }
    // Another vault's key file on a root first: its exit code names the cause.
    if let Some(e) = root_error
        .as_ref()
        .filter(|e| crate::error::kind_of(e) == Some(crate::error::Kind::Foreign))
    {
        return Err(crate::error::foreign(format!("{e}")));
    }
    if !damaged.is_empty() {
        return Err(crate::error::Error::Damaged(format!(
                "{} damaged pack cop{} affecting {} file(s){}{}; restore the files from another copy or a backup (a pack missing only locally is fetched from a backend that has it)",
                damaged.len(),
                if damaged.len() == 1 { "y" } else { "ies" },
                files.len(),
                root_error.as_ref().map_or(String::new(), |e| format!("; {e}")),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("; not checked: {}", errors.join("; "))
                }
        ))
        .into());
    }
    if let Some(e) = root_error {
        return Err(e);
    }
    if !errors.is_empty() {
        bail!(
            "could not check everything: {}; fix the access and run `tresor verify` again",
            errors.join("; ")
        );
    }
    Ok(())
}

fn print_human(reports: &[LocationReport], data: bool, files: &[String]) {
    for r in reports {
        let what = if r.name == LOCAL {
            "local store".to_string()
        } else {
            format!("backend {}", r.name)
        };
        if let Some(e) = &r.error {
            println!("{what}: NOT CHECKED: {e}");
        }
        println!(
            "{what}: {} packs expected, {} present{}, {} missing, {} with a wrong size, {} unreferenced object(s) (harmless)",
            r.packs_expected,
            r.packs_checked,
            if data {
                format!(" ({} downloaded and authenticated)", crate::progress::human(r.bytes_checked))
            } else {
                String::new()
            },
            r.missing,
            r.size_differs,
            r.unreferenced.len()
        );
        if let Some(root) = &r.root {
            for p in root.problems() {
                println!("  {what}: {p}");
            }
        }
        for d in &r.damaged {
            println!("  DAMAGED {} on {what}: {}", d.pack, d.problems.join("; "));
            if d.files.is_empty() {
                if !data && d.damaged_chunks == 0 {
                    println!("    no file known to be affected (run `tresor verify --data` to authenticate its chunks)");
                } else {
                    println!("    no file affected");
                }
            }
            for f in &d.files {
                println!("    affects {f}");
            }
        }
    }
    let roots_whole = reports
        .iter()
        .filter_map(|r| r.root.as_ref())
        .all(|r| !r.damaged() && !r.is_foreign());
    if !roots_whole {
        println!("verify: a backend's root is damaged or holds another vault (see above)");
    }
    if files.is_empty() && reports.iter().all(|r| r.damaged.is_empty()) {
        if !roots_whole {
            return;
        }
        println!(
            "verify: {}",
            if data {
                "every pack is present and every chunk authenticates"
            } else {
                "every pack is present with the right size (use --data to authenticate the contents)"
            }
        );
    } else {
        println!("damaged files:");
        for f in files {
            println!("  {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::pack::{check_pack_object, PackBuilder};
    use crate::vault::keys::MasterKey;

    struct Fixture {
        sealer: ChunkSealer,
        pack_key: SecretKey,
        row: PackRow,
        object: Vec<u8>,
        chunks: Vec<(ChunkId, ChunkLocation)>,
    }

    fn fixture() -> Fixture {
        let sk = MasterKey::for_tests(21).subkeys();
        let sealer = ChunkSealer::new(&sk);
        let id = PackId::random();
        let mut b = PackBuilder::new(id);
        let mut chunks = Vec::new();
        for i in 0..4u8 {
            let plain = vec![i; 5000 + i as usize * 1000];
            let cid = sealer.chunk_id(&plain);
            let sealed = sealer.seal(&cid, &plain);
            let e = b.push(cid, &sealed, plain.len() as u32);
            chunks.push((
                cid,
                ChunkLocation {
                    pack: 1,
                    offset: e.offset,
                    sealed_len: e.sealed_len,
                    plain_len: e.plain_len,
                    pack_size: 0,
                },
            ));
        }
        let object = b.finish(&sk.pack);
        let row = PackRow {
            number: 1,
            name: id.0,
            size: object.len() as u64,
        };
        Fixture {
            sealer,
            pack_key: sk.pack.clone(),
            row,
            object,
            chunks,
        }
    }

    #[test]
    fn intact_pack_has_no_findings() {
        let f = fixture();
        let r = check_object(&f.row, &f.object, &f.chunks, &f.pack_key, &f.sealer);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let path = PackId(f.row.name).object_path();
        assert_eq!(
            check_pack_object(&path, &f.object, &f.pack_key, &f.sealer),
            Ok(())
        );
    }

    #[test]
    fn flipped_byte_names_exactly_that_chunk() {
        let f = fixture();
        let mut o = f.object.clone();
        let (victim, loc) = f.chunks[2];
        o[loc.offset as usize + 100] ^= 1;
        let r = check_object(&f.row, &o, &f.chunks, &f.pack_key, &f.sealer);
        assert_eq!(r.bad_chunks, HashSet::from([victim]));
        let path = PackId(f.row.name).object_path();
        assert!(check_pack_object(&path, &o, &f.pack_key, &f.sealer).is_err());
    }

    #[test]
    fn truncated_pack_loses_the_cut_chunks_and_the_trailer() {
        let f = fixture();
        let cut = f.chunks[3].1.offset as usize + 10;
        let r = check_object(&f.row, &f.object[..cut], &f.chunks, &f.pack_key, &f.sealer);
        assert_eq!(r.bad_chunks, HashSet::from([f.chunks[3].0]));
        assert!(
            r.problems.iter().any(|p| p.contains("trailer")),
            "{:?}",
            r.problems
        );
        assert!(
            r.problems.iter().any(|p| p.contains("index says")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn pack_under_another_name_fails_the_trailer_check() {
        let f = fixture();
        let other = PackId::random().object_path();
        let e = check_pack_object(&other, &f.object, &f.pack_key, &f.sealer).unwrap_err();
        assert!(e.contains("authentication"), "{e}");
        let row = PackRow {
            name: PackId::random().0,
            ..f.row
        };
        let r = check_object(&row, &f.object, &f.chunks, &f.pack_key, &f.sealer);
        assert!(
            r.problems.iter().any(|p| p.contains("trailer")),
            "{:?}",
            r.problems
        );
    }
}

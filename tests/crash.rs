//! Crash tests: `kill -9` of the daemon at a random moment of a heavy
//! workload, then `tresor fsck` must find nothing to repair, a remount must
//! give a consistent tree, and every file whose last operation was an
//! fsynced write must hold exactly the fsynced bytes.
//!
//! Rounds: `TRESOR_CRASH_ROUNDS` (default 20); seed: `TRESOR_CRASH_SEED`
//! (default: from the clock, printed so a failure can be replayed).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::servers::S3Server;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Names the workload picks from: bounded, so the tree stays small.
const DIRS: [&str; 4] = ["", "d1", "d2", "d1/deep"];
const NAMES: usize = 16;
const MAX_OPS_PER_ROUND: u64 = 100_000;

/// What the workload promises about one path.
#[derive(Default)]
struct Model {
    /// path -> content as of the last completed fsync, if nothing touched
    /// the path (or its inode's content) since.
    synced: BTreeMap<String, Vec<u8>>,
    /// path -> current content (as the workload believes), and which paths
    /// share an inode (hard links) by a model inode id.
    content: BTreeMap<u64, Vec<u8>>,
    paths: BTreeMap<String, u64>,
    next_id: u64,
    ops: BTreeMap<&'static str, u64>,
    /// What happened, in order (printed for a path whose check fails).
    log: Vec<String>,
}

impl Model {
    /// Invalidates every promise about `path` and paths sharing its inode.
    fn touch_inode(&mut self, id: u64) {
        self.log
            .push(format!("content of model inode {id} changes"));
        let linked: Vec<String> = self
            .paths
            .iter()
            .filter(|(_, &i)| i == id)
            .map(|(p, _)| p.clone())
            .collect();
        for p in linked {
            self.log.push(format!("  (so {p} is no longer promised)"));
            self.synced.remove(&p);
        }
    }

    fn promise(&mut self, path: String, data: Vec<u8>) {
        self.log.push(format!(
            "fsynced {path}: {} B, model inode {:?}",
            data.len(),
            self.paths.get(&path)
        ));
        self.synced.insert(path, data);
    }

    fn touch_path(&mut self, path: &str) {
        self.log.push(format!("touch {path}"));
        self.synced.remove(path);
        if let Some(&id) = self.paths.get(path) {
            self.touch_inode(id);
        }
    }

    /// Rebuilds the model from the mounted tree (after a remount: what is
    /// there now is the starting point of the next round).
    fn from_tree(root: &Path) -> Model {
        let mut m = Model::default();
        let mut by_ino: BTreeMap<u64, u64> = BTreeMap::new();
        for d in DIRS {
            let dir = root.join(d);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let e = e.unwrap();
                let md = fs::symlink_metadata(e.path()).unwrap();
                if !md.is_file() {
                    continue;
                }
                let rel = rel_path(d, &e.file_name().to_string_lossy());
                let id = *by_ino.entry(md.ino()).or_insert_with(|| {
                    m.next_id += 1;
                    m.content
                        .insert(m.next_id, fs::read(e.path()).expect("read for the model"));
                    m.next_id
                });
                m.paths.insert(rel, id);
            }
        }
        m
    }
}

fn rel_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn random_path(rng: &mut StdRng) -> String {
    let d = DIRS[rng.gen_range(0..DIRS.len())];
    rel_path(d, &format!("f{}", rng.gen_range(0..NAMES)))
}

fn random_len(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(0..16 * 1024),
        60..=89 => rng.gen_range(16 * 1024..300 * 1024),
        _ => rng.gen_range(300 * 1024..3 * 1024 * 1024),
    }
}

fn random_data(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // Half compressible text-like data, half random: both paths of the
    // chunk pipeline.
    if rng.gen_bool(0.5) {
        rng.fill(&mut v[..]);
    } else {
        let word: u8 = rng.gen_range(b'a'..=b'z');
        for (i, b) in v.iter_mut().enumerate() {
            *b = if i % 7 == 6 {
                b' '
            } else {
                word + (i % 5) as u8
            };
        }
    }
    v
}

/// Runs random operations on the mount until one fails (the daemon died)
/// or `stop` is set. Records each completed operation in `model`.
fn workload(
    root: PathBuf,
    dev: u64,
    seed: u64,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Files unlinked while still open: orphans if the daemon dies now.
    let mut held: Vec<File> = Vec::new();
    for _ in 0..MAX_OPS_PER_ROUND {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if one_op(&root, dev, &mut rng, &model, &mut held).is_err() {
            return;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

fn one_op(
    root: &Path,
    dev: u64,
    rng: &mut StdRng,
    model: &Mutex<Model>,
    held: &mut Vec<File>,
) -> std::io::Result<()> {
    let path = random_path(rng);
    let full = root.join(&path);
    let fsync = rng.gen_bool(0.5);
    let kind = rng.gen_range(0..100);
    let mut m = model.lock().unwrap();
    let op: &'static str = match kind {
        // create or replace a whole file
        0..=34 => {
            let len = random_len(rng);
            let data = random_data(rng, len);
            m.touch_path(&path);
            // O_TRUNC on an existing name writes through to its inode
            let id = match m.paths.get(&path) {
                Some(&id) => id,
                None => {
                    m.next_id += 1;
                    m.next_id
                }
            };
            m.paths.insert(path.clone(), id);
            m.content.insert(id, Vec::new());
            drop(m);
            let mut f = File::create(&full)?;
            f.write_all(&data)?;
            let mut m2 = model.lock().unwrap();
            m2.content.insert(id, data.clone());
            drop(m2);
            if fsync {
                f.sync_all()?;
                on_mount(&f, dev)?;
                model.lock().unwrap().promise(path, data);
            }
            return count(model, if fsync { "write+fsync" } else { "write" });
        }
        // overwrite a range, or append
        35..=49 => {
            let Some(&id) = m.paths.get(&path) else {
                return Ok(());
            };
            let cur = m.content[&id].clone();
            let len = rng.gen_range(1..200 * 1024);
            let data = random_data(rng, len);
            let off = if rng.gen_bool(0.3) {
                cur.len()
            } else {
                rng.gen_range(0..=cur.len())
            };
            m.touch_inode(id);
            drop(m);
            let f = OpenOptions::new().write(true).open(&full)?;
            f.write_all_at(&data, off as u64)?;
            let mut new = cur;
            if new.len() < off + data.len() {
                new.resize(off + data.len(), 0);
            }
            new[off..off + data.len()].copy_from_slice(&data);
            model.lock().unwrap().content.insert(id, new.clone());
            if fsync {
                f.sync_all()?;
                on_mount(&f, dev)?;
                model.lock().unwrap().promise(path, new);
            }
            "pwrite"
        }
        // truncate (shrink or grow)
        50..=59 => {
            let Some(&id) = m.paths.get(&path) else {
                return Ok(());
            };
            let cur = m.content[&id].clone();
            let len = rng.gen_range(0..=cur.len() + 100_000);
            m.touch_inode(id);
            drop(m);
            let f = OpenOptions::new().write(true).open(&full)?;
            f.set_len(len as u64)?;
            let mut new = cur;
            new.resize(len, 0);
            model.lock().unwrap().content.insert(id, new.clone());
            if fsync {
                f.sync_all()?;
                on_mount(&f, dev)?;
                model.lock().unwrap().promise(path, new);
            }
            "truncate"
        }
        // rename (possibly over an existing file)
        60..=71 => {
            let Some(&id) = m.paths.get(&path) else {
                return Ok(());
            };
            let to = random_path(rng);
            // rename between two names of one inode does nothing (POSIX)
            if to == path || m.paths.get(&to) == Some(&id) {
                return Ok(());
            }
            m.touch_path(&path);
            m.touch_path(&to);
            drop(m);
            fs::rename(&full, root.join(&to))?;
            let mut m = model.lock().unwrap();
            m.log
                .push(format!("renamed {path} -> {to} (model inode {id})"));
            m.paths.remove(&path);
            m.paths.insert(to, id);
            "rename"
        }
        // unlink
        72..=81 => {
            if !m.paths.contains_key(&path) {
                return Ok(());
            }
            m.touch_path(&path);
            drop(m);
            let keep_open = rng.gen_bool(0.3);
            if keep_open {
                held.push(File::open(&full)?);
                if held.len() > 4 {
                    held.remove(0);
                }
            }
            fs::remove_file(&full)?;
            model.lock().unwrap().paths.remove(&path);
            if keep_open {
                "unlink-while-open"
            } else {
                "unlink"
            }
        }
        // hard link
        82..=89 => {
            let Some(&id) = m.paths.get(&path) else {
                return Ok(());
            };
            let to = random_path(rng);
            if m.paths.contains_key(&to) {
                return Ok(());
            }
            m.touch_path(&to);
            drop(m);
            fs::hard_link(&full, root.join(&to))?;
            let mut m = model.lock().unwrap();
            m.log
                .push(format!("linked {path} -> {to} (model inode {id})"));
            m.paths.insert(to, id);
            "link"
        }
        // fsync only: makes the current content the promise
        _ => {
            let Some(&id) = m.paths.get(&path) else {
                return Ok(());
            };
            let cur = m.content[&id].clone();
            drop(m);
            let f = OpenOptions::new().write(true).open(&full)?;
            f.sync_all()?;
            on_mount(&f, dev)?;
            model.lock().unwrap().promise(path, cur);
            "fsync"
        }
    };
    count(model, op)
}

/// After the kill, `fusermount3 -u -z` uncovers the plain directory under
/// the mountpoint: a write + fsync racing with it would succeed there and
/// make a promise the vault never saw. Only files on the mount count.
fn on_mount(f: &File, dev: u64) -> std::io::Result<()> {
    if f.metadata()?.dev() == dev {
        Ok(())
    } else {
        Err(std::io::Error::other("the mount is gone"))
    }
}

fn count(model: &Mutex<Model>, op: &'static str) -> std::io::Result<()> {
    *model.lock().unwrap().ops.entry(op).or_default() += 1;
    Ok(())
}

fn crash_seed() -> u64 {
    std::env::var("TRESOR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
}

#[test]
fn kill9_at_random_moments_keeps_fsynced_data_and_a_clean_index() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let rounds: u64 = std::env::var("TRESOR_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = crash_seed();
    eprintln!("crash test: {rounds} rounds, seed {seed} (replay: TRESOR_CRASH_SEED={seed})");
    for d in &DIRS[1..] {
        fs::create_dir_all(v.path(d)).unwrap();
    }
    let started = Instant::now();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut verified_total = 0;
    for round in 0..rounds {
        let round_seed = seed.wrapping_mul(1_000_003).wrapping_add(round);
        let mut rng = StdRng::seed_from_u64(round_seed);
        let delay = Duration::from_millis(rng.gen_range(150..2500));
        let model = Arc::new(Mutex::new(Model::from_tree(&v.mnt)));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let worker = {
            let (root, model, stop, done) =
                (v.mnt.clone(), model.clone(), stop.clone(), done.clone());
            let dev = fs::metadata(&v.mnt).unwrap().dev();
            assert!(is_fuse_mounted(&v.mnt));
            std::thread::spawn(move || workload(root, dev, round_seed, model, stop, done))
        };
        std::thread::sleep(delay);
        v.kill9();
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("workload thread panicked");
        let what = format!("round {round} (seed {round_seed}, kill after {delay:?})");
        // The crashed state itself must be consistent: fsck before any mount.
        let fsck = assert_fsck_clean(&v, &what);
        v.mount();
        let m = model.lock().unwrap();
        for (path, want) in &m.synced {
            let history = || {
                let name = path.rsplit('/').next().unwrap_or(path);
                let lines: Vec<&str> = m
                    .log
                    .iter()
                    .filter(|l| l.contains(name) || l.contains("model inode"))
                    .map(String::as_str)
                    .collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            let got = fs::read(v.path(path)).unwrap_or_else(|e| {
                panic!("{what}: fsynced file {path} unreadable: {e}\n{}", history())
            });
            if got != *want {
                eprintln!("{what}: history of {path}:\n{}", history());
            }
            assert_bytes_eq(&got, want, &format!("{what}: fsynced {path}"));
        }
        let entries = assert_tree_consistent(&v.mnt, &what);
        eprintln!(
            "{what}: {} ops done, {} fsynced files verified, {entries} entries consistent, fsck: {} inodes, {} pending orphans",
            done.load(Ordering::Relaxed),
            m.synced.len(),
            fsck["remaining"]["checked"]["inodes"],
            fsck["remaining"]["pending_orphans"],
        );
        verified_total += m.synced.len();
        for (k, n) in &m.ops {
            *totals.entry(k).or_default() += n;
        }
    }
    v.unmount();
    assert_fsck_clean(&v, "after the last clean unmount");
    eprintln!(
        "crash test: {rounds} rounds in {:.1} s; ops {totals:?}; {verified_total} fsynced files verified",
        started.elapsed().as_secs_f64()
    );
    assert!(
        totals.values().sum::<u64>() > rounds,
        "the workload did almost nothing: {totals:?}"
    );
    assert!(verified_total > 0, "no fsynced file was ever verified");
}

fn sync(v: &TestVault) -> Run {
    v.tresor_cmd(&["sync"], &["--timeout", "120", "--quiet"], true)
}

#[test]
fn kill9_during_upload_resumes_and_stays_consistent() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("crash");
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    v.mount();
    // ~96 MiB in 6 files (7 packs) written while the S3 server is paused,
    // so that every upload is still to do when it resumes.
    s3.pause();
    let mut want = BTreeMap::new();
    for i in 0..6u64 {
        let p = v.path(format!("big{i}.bin"));
        write_random_file(&p, 700 + i, 16 * MIB);
        File::open(&p).unwrap().sync_all().unwrap();
        want.insert(p.clone(), file_hash(&p));
    }
    s3.resume();
    // `tresor sync` asks the daemon and shows progress; kill the daemon
    // once some but not all packs are in the bucket.
    let mut syncing = v.cmd();
    syncing
        .args(["sync", "--quiet", "--vault"])
        .arg(&v.vault)
        .arg("--passphrase-file")
        .arg(&v.passfile)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = syncing.spawn().expect("spawn tresor sync");
    let packs_in_bucket = || {
        s3.list_keys()
            .iter()
            .filter(|k| k.contains("/packs/"))
            .count()
    };
    wait_until("the first pack upload", Duration::from_secs(60), || {
        packs_in_bucket() >= 1
    });
    let before_kill = packs_in_bucket();
    v.kill9();
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("killed the daemon with {before_kill} pack(s) in the bucket");
    assert_fsck_clean(&v, "after kill -9 during upload");
    v.mount();
    let run = sync(&v);
    assert!(
        run.success(),
        "sync after the crash failed: {run}\n{}",
        v.log_tail()
    );
    for (p, h) in &want {
        assert_eq!(file_hash(p), *h, "{} differs after the crash", p.display());
    }
    assert_tree_consistent(&v.mnt, "after kill -9 during upload");
    v.unmount();
    let fsck = assert_fsck_clean(&v, "after sync");
    let packs = fsck["remaining"]["checked"]["packs"].as_u64().unwrap() as usize;
    assert!(
        before_kill < packs,
        "the kill came after the upload had finished ({before_kill} of {packs} packs)"
    );
    assert_eq!(
        packs_in_bucket(),
        packs,
        "every pack is in the bucket after sync"
    );
    assert!(
        s3.list_keys()
            .iter()
            .any(|k| k.ends_with("keys/tresor.key")),
        "key file not uploaded"
    );
}

//! Real storage servers on loopback for the backend integration tests.
//!
//! Each fixture starts a real server process (no mocks) bound to `127.0.0.1`
//! on a free port, in its own temp dir, and kills it on `Drop`:
//!
//! | fixture        | server                                   | provided by                                  |
//! |----------------|------------------------------------------|----------------------------------------------|
//! | [`S3Server`]     | `moto_server` (moto's S3 API, in memory) | PyPI `moto[server]`                          |
//! | [`WebdavServer`] | `wsgidav` on `cheroot`, basic auth       | PyPI `wsgidav`, `cheroot`                    |
//! | [`SftpServer`]   | `/usr/sbin/sshd -D -e`, `internal-sftp`  | Debian `openssh-server` (+ `openssh-client`) |
//!
//! `scripts/ci-servers-deps.sh` installs all of them (idempotent). The binaries
//! can be overridden with `TRESOR_MOTO_SERVER`, `TRESOR_WSGIDAV`, `TRESOR_SSHD`.
//!
//! # Outages
//! Every fixture has `pause()`/`resume()`: SIGSTOP/SIGCONT to the server's
//! process group *and* every process that belongs to it (sshd forks one
//! process per connection in a session of its own, so the group alone is not
//! enough). A stopped server keeps its listening socket and all its state: the
//! kernel still completes TCP handshakes into the listen backlog, but nothing
//! answers, so a client sees exactly what it sees when a backend is unreachable
//! or hung -- requests time out -- and after `resume()` everything is as before.
//! That is why SIGSTOP is the outage to test retry/timeout paths with; it
//! loses no data, unlike killing an in-memory server.
//!
//! Every fixture also has `stop()`/`restart()`, a hard outage where connects
//! are refused (ECONNREFUSED) and open connections are reset:
//! - WebDAV and SFTP: the server is SIGKILLed and restarted on the same port
//!   (same credentials and host key); their data is on disk, so it survives.
//! - S3: moto keeps objects in memory and has no persistent mode, so killing
//!   it would lose the bucket. `S3Server::endpoint` is therefore a small TCP
//!   relay (threads in the test process) in front of moto: `stop()` closes the
//!   relay's listener and resets every relayed connection, `restart()` listens
//!   on the same port again; moto and its objects are untouched. The
//!   inspection helpers (`object_count`, `list_keys`, `get_object`,
//!   `put_object`) talk to moto directly, so they also work while stopped.
//!   `S3Server::crash_restart()` is the real thing: SIGKILL moto, start a new
//!   one, re-create the (now empty) bucket.
//!
//! # Bounds
//! Every wait is bounded and panics with what it waited for, the last error
//! and the tail of the server's log (stdout+stderr, in its temp dir):
//! [`START_TIMEOUT`] for a server to answer, [`REQUEST_TIMEOUT`] for each
//! request the fixture itself makes, [`STOP_TIMEOUT`] for processes to die or
//! stop. Servers run in their own process group; `Drop` SIGKILLs the group and
//! every process carrying the fixture's marker variable or descending from
//! the server, then reaps it. A watchdog shell (one per server, own process
//! group) does the same if the test process dies without running `Drop`
//! (abort, SIGKILL). `TRESOR_TEST_DIR` sets the parent of the temp dirs,
//! `TRESOR_KEEP_TEST_DIRS=1` keeps them (logs, configs) for inspection.
//!
//! # SFTP and `known_hosts`
//! OpenDAL's sftp service runs the system `ssh` through the `openssh` crate
//! (`ssh -M -f -N -S <ctl>` master + multiplexed `ssh -S <ctl> ... -s sftp`).
//! It cannot be given a known_hosts file: it reads `~/.ssh/known_hosts`, with
//! `known_hosts_strategy` `strict` (default, `StrictHostKeyChecking=yes`),
//! `add` (`accept-new`) or `accept` (`no`). The fixture does not touch
//! `~/.ssh`. Two ways to connect:
//! - Preferred, strict checking: run the process that uses OpenDAL (the
//!   `tresor` binary) with the variables of [`SftpServer::ssh_env`]; they put
//!   a wrapper `ssh` first on `PATH` that adds
//!   `-o UserKnownHostsFile=<known_hosts> -o GlobalKnownHostsFile=/dev/null`
//!   (ssh keeps the first value it gets for an option, and the crate passes no
//!   known-hosts file of its own). Leave `known_hosts_strategy` unset/`strict`.
//! - Or `known_hosts_strategy=accept`: works without the wrapper, but ssh then
//!   appends `[127.0.0.1]:PORT` lines with a fresh random host key to
//!   `~/.ssh/known_hosts` on every run (`add` even fails once a port is
//!   reused with a new key). Avoid in tests.
//!
//! `ssh` itself creates an empty `~/.ssh` if there is none; nothing is
//! written into it with the wrapper. The `openssh` crate keeps its control
//! sockets under `$XDG_STATE_HOME` (`~/.local/state`).
//!
//! # Notes
//! - moto checks no signatures but answers reads without an `Authorization`
//!   header with 403; raw requests ([`http_request`]) should send
//!   [`S3Server::dummy_authorization`]. moto costs ~10 ms per request.
//! - [`WebdavServer::endpoint`] has no trailing slash (OpenDAL's webdav
//!   service would build `//root/...` URLs, which cheroot rejects).
//! - [`run_bounded`] and [`http_request`] are public for tests that need a
//!   bounded command or a raw HTTP request.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take from spawn to answering properly.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one request made by the fixture itself (readiness probe, bucket
/// creation, listing, `ssh true`) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long processes may take to die after SIGKILL or to stop after SIGSTOP.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(20);
const MARKER_VAR: &str = "TRESOR_TEST_SERVER_ID";
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bind port 0, read it, drop the listener).
/// Never returns the same port twice in one test process, so parallel tests
/// do not race each other for it.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("free_port: cannot bind 127.0.0.1:0: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused port after 1000 tries");
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// True if something accepts TCP connections on 127.0.0.1:port.
fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).is_ok()
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new(kind: &str) -> TestDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let parent = std::env::var_os("TRESOR_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(
            "tresor-{kind}-{}-{}-{nanos:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        let path = path.canonicalize().expect("canonicalize temp dir");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        if std::env::var_os("TRESOR_KEEP_TEST_DIRS").is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("servers: keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// One row of /proc/PID/stat.
struct ProcInfo {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    state: char,
}

fn read_proc_stat(pid: i32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..." -- comm may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgrp,
        state,
    })
}

fn all_procs() -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc_stat)
        .collect()
}

fn has_marker(pid: i32, marker_kv: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker_kv))
        .unwrap_or(false)
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A watchdog that kills the server if the test process dies without running
/// `Drop` (abort, SIGKILL, harness timeout).
const WATCHDOG_SCRIPT: &str = r#"
# $1 test pid, $2 server pid (= its process group), $3 marker NAME=VALUE.
# dash: `kill -SIG -PGID` (no `--`). sshd rewrites its environ (setproctitle)
# and puts connections in sessions of their own: collect its process tree.
tree() {
  local root="$1" s line pid
  echo "$root"
  for s in /proc/[0-9]*/stat; do
    read -r line < "$s" 2>/dev/null || continue
    pid=${s#/proc/}; pid=${pid%/stat}
    set -- ${line##*) }
    [ "$2" = "$root" ] && [ "$pid" != "$root" ] && tree "$pid"
  done
}
while kill -0 "$1" 2>/dev/null; do sleep 1; done
pids=$(tree "$2")
kill -CONT -"$2" 2>/dev/null
kill -KILL -"$2" 2>/dev/null
for p in $pids; do kill -KILL "$p" 2>/dev/null; done
for f in /proc/[0-9]*/environ; do
  if tr '\0' '\n' < "$f" 2>/dev/null | grep -qxF -e "$3"; then
    p=${f#/proc/}; kill -KILL "${p%/environ}" 2>/dev/null
  fi
done
"#;

/// A running server process in its own process group, its output in `log`.
struct ServerProc {
    name: String,
    child: Child,
    marker_kv: String,
    log: PathBuf,
    watchdog: Option<Child>,
    paused: AtomicBool,
    /// The child was reaped: its pid (= pgid) may belong to someone else now.
    /// Until then it is at worst a zombie, which keeps the pid reserved.
    reaped: bool,
}

impl ServerProc {
    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> ServerProc {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let marker = format!(
            "{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            dir.display()
        );
        let marker_kv = format!("{MARKER_VAR}={marker}");
        let log = dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(dir)
            .env(MARKER_VAR, &marker)
            .process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {name} ({program}): {e}\n\
                 install the test servers with scripts/ci-servers-deps.sh"
            )
        });
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("tresor-server-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(&marker_kv)
            .env_remove(MARKER_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        ServerProc {
            name: name.to_string(),
            child,
            marker_kv,
            log,
            watchdog,
            paused: AtomicBool::new(false),
            reaped: false,
        }
    }

    fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every live process of this server: its process group, its
    /// descendants, and whatever carries its marker variable.
    fn pids(&self) -> BTreeSet<i32> {
        let me = std::process::id() as i32;
        let pgid = if self.reaped { -1 } else { self.pgid() };
        let procs: Vec<ProcInfo> = all_procs().into_iter().filter(|p| p.state != 'Z').collect();
        let mut set: BTreeSet<i32> = procs
            .iter()
            .filter(|p| {
                p.pid == pgid || p.pgrp == pgid || has_marker(p.pid, self.marker_kv.as_bytes())
            })
            .map(|p| p.pid)
            .collect();
        loop {
            let before = set.len();
            for p in &procs {
                if set.contains(&p.ppid) {
                    set.insert(p.pid);
                }
            }
            if set.len() == before {
                break;
            }
        }
        set.remove(&me);
        if let Some(w) = &self.watchdog {
            set.remove(&(w.id() as i32));
        }
        set
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Err(message) if the server process has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = true;
                Err(format!("{} exited ({status})", self.name))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(format!("{}: wait failed: {e}", self.name)),
        }
    }

    /// Polls `probe` until it returns Ok, the process exits, or `timeout`.
    fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::from("not probed yet");
        loop {
            if let Err(e) = self.check_alive() {
                return Err(format!(
                    "{e} while waiting for {what} (last probe: {last})\n--- {} ---\n{}",
                    self.log.display(),
                    self.log_tail()
                ));
            }
            match probe() {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what} (last probe: {last})\n--- {} ---\n{}",
                    self.log.display(),
                    self.log_tail()
                ));
            }
            thread::sleep(POLL);
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        if !self.reaped {
            signal(-self.pgid(), sig);
        }
    }

    fn signal_all(&self, sig: libc::c_int) -> BTreeSet<i32> {
        let mut pids = self.pids();
        self.signal_group(sig);
        for &pid in &pids {
            signal(pid, sig);
        }
        // A connection forked while we were signalling.
        let again = self.pids();
        for &pid in again.difference(&pids) {
            signal(pid, sig);
        }
        pids.extend(again);
        pids
    }

    fn pause(&self) {
        if self.paused.load(Ordering::SeqCst) {
            return;
        }
        let pids = self.signal_all(libc::SIGSTOP);
        let start = Instant::now();
        loop {
            let running: Vec<i32> = pids
                .iter()
                .copied()
                .filter(|&p| {
                    read_proc_stat(p).is_some_and(|i| !matches!(i.state, 'T' | 't' | 'Z' | 'X'))
                })
                .collect();
            if running.is_empty() {
                break;
            }
            if start.elapsed() > STOP_TIMEOUT {
                panic!(
                    "{}: processes {running:?} still running {STOP_TIMEOUT:?} after SIGSTOP",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.signal_all(libc::SIGCONT);
        self.paused.store(false, Ordering::SeqCst);
    }

    /// SIGKILLs every process of the server and reaps it. Returns the pids
    /// still alive after STOP_TIMEOUT (empty on success).
    fn kill(&mut self) -> Vec<i32> {
        let pids = self.pids(); // before the tree falls apart
        self.signal_group(libc::SIGKILL);
        for &pid in &pids {
            signal(pid, libc::SIGKILL);
        }
        let start = Instant::now();
        let mut left;
        // Not reaped inside the loop: the zombie keeps pid/pgid reserved.
        loop {
            left = self
                .pids()
                .into_iter()
                .chain(
                    pids.iter()
                        .copied()
                        .filter(|&p| read_proc_stat(p).is_some_and(|i| i.state != 'Z')),
                )
                .collect::<BTreeSet<i32>>();
            for &pid in &left {
                signal(pid, libc::SIGKILL);
            }
            if left.is_empty() || start.elapsed() > STOP_TIMEOUT {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        // Reap our direct child (bounded; SIGKILL is not ignorable).
        while !self.reaped && start.elapsed() <= STOP_TIMEOUT {
            self.reaped = self.child.try_wait().ok().flatten().is_some();
            if !self.reaped {
                thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            signal(-(w.id() as i32), libc::SIGKILL); // the shell and its `sleep`
            let _ = w.wait();
        }
        self.paused.store(false, Ordering::SeqCst);
        left.into_iter().collect()
    }

    /// `kill()` that panics (unless already panicking) if anything survives.
    fn kill_or_panic(&mut self) {
        let left = self.kill();
        if !left.is_empty() {
            let msg = format!(
                "{}: processes {left:?} still alive {STOP_TIMEOUT:?} after SIGKILL",
                self.name
            );
            if thread::panicking() {
                eprintln!("servers: {msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..].join("\n")
}

fn log_says_addr_in_use(p: &ServerProc) -> bool {
    let tail = p.log_tail().to_lowercase();
    tail.contains("address already in use") || tail.contains("errno 98")
}

/// Runs `cmd` to completion, killing it (and its process group) after
/// `timeout`. Returns (status, stdout, stderr); status None = timed out.
/// Output goes through temp files, not pipes: an `ssh -f` master or a mux
/// client's master may keep inherited descriptors open long after.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir().join(format!(
        "tresor-run-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let create =
        |p: &Path| File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
    cmd.stdin(Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path))
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            signal(-(child.id() as i32), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| {
        let s = fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let _ = fs::remove_file(p);
        s
    };
    (status, read(&out_path), read(&err_path))
}

fn program(var: &str, default: &str) -> OsString {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client (Connection: close), enough for the fixtures
// ---------------------------------------------------------------------------

/// A response of [`http_request`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request to 127.0.0.1:port with `Connection: close`; every
/// connect/read/write bounded by `timeout`. `path` must be already encoded.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw, method == "HEAD")
}

fn parse_http_response(raw: &[u8], head: bool) -> io::Result<HttpResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of HTTP headers"))?;
    let head_text = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head {
        body.clear();
    } else if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/`
/// when `keep_slash`).
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&amp;", "&")
}

fn xml_tags<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// TCP relay (S3 stop/restart without losing moto's in-memory objects)
// ---------------------------------------------------------------------------

struct TcpRelay {
    port: u16,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>,
    /// Bytes relayed from the server to clients (response bodies and headers).
    served: Arc<AtomicU64>,
}

impl TcpRelay {
    fn start(port: u16, upstream: u16) -> io::Result<TcpRelay> {
        // std sets SO_REUSEADDR; retry briefly in case the port is in flux.
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(loopback(port)) {
                Ok(l) => break l,
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && start.elapsed() < Duration::from_secs(5) =>
                {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e),
            }
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>> = Arc::default();
        let (stop2, conns2) = (stopping.clone(), conns.clone());
        let served = Arc::new(AtomicU64::new(0));
        let served2 = served.clone();
        let accept = thread::Builder::new()
            .name(format!("s3-relay-{port}"))
            .spawn(move || {
                let mut next_id = 0u64;
                for incoming in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = incoming else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    next_id += 1;
                    let (id, stopping, conns) = (next_id, stop2.clone(), conns2.clone());
                    let served = served2.clone();
                    let _ = thread::Builder::new()
                        .name(format!("s3-relay-{port}-{id}"))
                        .spawn(move || relay_conn(id, client, upstream, stopping, conns, served));
                }
            })?;
        Ok(TcpRelay {
            port,
            stopping,
            accept: Some(accept),
            conns,
            served,
        })
    }

    /// Closes the listener (connects are refused from now on) and resets
    /// every relayed connection.
    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            // Wake the blocked accept() so the thread sees the flag.
            let _ = TcpStream::connect_timeout(&loopback(self.port), Duration::from_secs(1));
            let _ = t.join();
        }
        for (_, conn) in self.conns.lock().unwrap().drain() {
            for s in conn {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay_conn(
    id: u64,
    client: TcpStream,
    upstream_port: u16,
    stopping: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>,
    served: Arc<AtomicU64>,
) {
    let Ok(upstream) = TcpStream::connect_timeout(&loopback(upstream_port), REQUEST_TIMEOUT) else {
        return; // dropping `client` closes it
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    {
        let mut map = conns.lock().unwrap();
        if stopping.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        map.insert(id, [c3, u3]);
    }
    let remaining = Arc::new(AtomicUsize::new(2));
    let pump = move |mut from: TcpStream,
                     mut to: TcpStream,
                     remaining: Arc<AtomicUsize>,
                     conns: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>,
                     count: Option<Arc<AtomicU64>>| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(c) = &count {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            conns.lock().unwrap().remove(&id);
        }
    };
    let (r2, k2) = (remaining.clone(), conns.clone());
    let back = thread::Builder::new().spawn(move || pump(u2, c2, r2, k2, Some(served)));
    if back.is_err() {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        conns.lock().unwrap().remove(&id);
        return;
    }
    pump(client, upstream, remaining, conns, None);
}

// ---------------------------------------------------------------------------
// S3: moto_server
// ---------------------------------------------------------------------------

/// A real S3 API (moto_server, objects in memory) on 127.0.0.1 with one bucket.
///
/// OpenDAL: `endpoint`, `region`, `bucket`, `access_key_id`,
/// `secret_access_key` (path-style addressing, OpenDAL's default; moto does
/// not check signatures). `endpoint` is a TCP relay in front of moto so that
/// `stop()`/`restart()` can refuse connections without losing objects (see
/// the module doc).
pub struct S3Server {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub endpoint: String,
    pub port: u16,
    /// `us-east-1`.
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Wall time `start()` took (spawn to bucket created).
    pub started_in: Duration,
    moto_port: u16,
    relay: Option<TcpRelay>,
    proc: Option<ServerProc>,
    dir: TestDir,
}

impl S3Server {
    /// Starts moto_server on a free port, waits until it answers, creates
    /// `bucket` and puts the relay in front of it.
    pub fn start(bucket: &str) -> S3Server {
        let t0 = Instant::now();
        let dir = TestDir::new("s3");
        let (proc, moto_port) = Self::spawn_moto(&dir, None);
        let port = free_port();
        let relay = TcpRelay::start(port, moto_port)
            .unwrap_or_else(|e| panic!("S3 relay: cannot listen on 127.0.0.1:{port}: {e}"));
        let mut s = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key_id: "tresor-test-access-key".into(),
            secret_access_key: "tresor-test-secret-key".into(),
            started_in: Duration::ZERO,
            moto_port,
            relay: Some(relay),
            proc: Some(proc),
            dir,
        };
        s.create_bucket();
        // The relay path works too.
        let auth = s.dummy_authorization();
        let r = http_request(
            port,
            "HEAD",
            &format!("/{}", percent_encode(bucket, false)),
            &[("Authorization", &auth)],
            b"",
            REQUEST_TIMEOUT,
        );
        match r {
            Ok(r) if r.status == 200 => {}
            other => panic!("S3 relay 127.0.0.1:{port}: HEAD bucket through the relay: {other:?}"),
        }
        s.started_in = t0.elapsed();
        s
    }

    /// Spawns moto on `port` (or a free one, retrying on a lost port race)
    /// and waits until it answers ListBuckets.
    fn spawn_moto(dir: &TestDir, port: Option<u16>) -> (ServerProc, u16) {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = port.unwrap_or_else(free_port);
            let mut cmd = Command::new(program("TRESOR_MOTO_SERVER", "moto_server"));
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("PYTHONUNBUFFERED", "1")
                .env("MOTO_S3_DEFAULT_MAX_KEYS", "1000");
            let mut proc = ServerProc::spawn("moto_server", cmd, &dir.path);
            let ready = proc.wait_ready(
                &format!("moto_server to answer GET / on 127.0.0.1:{port}"),
                START_TIMEOUT,
                || match http_request(port, "GET", "/", &[], b"", REQUEST_TIMEOUT) {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status)),
                    Err(e) => Err(e.to_string()),
                },
            );
            match ready {
                Ok(()) => return (proc, port),
                Err(e) => {
                    let retry = log_says_addr_in_use(&proc);
                    proc.kill();
                    if !retry {
                        panic!("S3Server: {e}");
                    }
                    last = e;
                }
            }
        }
        panic!("S3Server: no free port after {START_ATTEMPTS} attempts: {last}");
    }

    fn proc(&self) -> &ServerProc {
        self.proc.as_ref().expect("moto_server is running")
    }

    fn moto(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        if self.proc().paused.load(Ordering::SeqCst) {
            panic!("S3Server: {method} {path} while moto_server is paused (call resume() first)");
        }
        let auth = self.dummy_authorization();
        http_request(
            self.moto_port,
            method,
            path,
            &[("Authorization", &auth)],
            body,
            REQUEST_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "S3Server: {method} {path} on moto 127.0.0.1:{}: {e}\n--- moto log ---\n{}",
                self.moto_port,
                self.proc().log_tail()
            )
        })
    }

    /// An `Authorization` header moto accepts. moto verifies no signature,
    /// but answers anonymous (header-less) reads with 403 AccessDenied, so
    /// raw HTTP requests must carry some SigV4-shaped header; this one.
    pub fn dummy_authorization(&self) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={}/20250101/{}/s3/aws4_request, SignedHeaders=host, Signature={}",
            self.access_key_id,
            self.region,
            "0".repeat(64)
        )
    }

    fn create_bucket(&self) {
        let r = self.moto(
            "PUT",
            &format!("/{}", percent_encode(&self.bucket, false)),
            b"",
        );
        if r.status != 200 {
            panic!(
                "S3Server: create bucket {:?}: HTTP {}: {}",
                self.bucket,
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }

    /// Creates another bucket with S3 Object Lock enabled
    /// (`x-amz-bucket-object-lock-enabled: true`).
    pub fn create_bucket_with_object_lock(&self, bucket: &str) {
        let auth = self.dummy_authorization();
        let r = http_request(
            self.moto_port,
            "PUT",
            &format!("/{}", percent_encode(bucket, false)),
            &[
                ("Authorization", &auth),
                ("x-amz-bucket-object-lock-enabled", "true"),
            ],
            b"",
            REQUEST_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("S3Server: create locked bucket {bucket:?}: {e}"));
        if r.status != 200 {
            panic!(
                "S3Server: create locked bucket {bucket:?}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }

    fn object_path(&self, key: &str) -> String {
        format!(
            "/{}/{}",
            percent_encode(&self.bucket, false),
            percent_encode(key, true)
        )
    }

    /// All keys in the bucket, sorted (ListObjectsV2, following pagination).
    pub fn list_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "/{}?list-type=2&max-keys=1000",
                percent_encode(&self.bucket, false)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", percent_encode(t, false)));
            }
            let r = self.moto("GET", &path, b"");
            let xml = String::from_utf8_lossy(&r.body).into_owned();
            if r.status != 200 {
                panic!("S3Server: list {path}: HTTP {}: {xml}", r.status);
            }
            keys.extend(xml_tags(&xml, "Key").into_iter().map(xml_unescape));
            let truncated = xml_tags(&xml, "IsTruncated")
                .first()
                .is_some_and(|v| *v == "true");
            token = xml_tags(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated {
                break;
            }
            if token.is_none() {
                panic!("S3Server: list {path}: truncated without NextContinuationToken");
            }
        }
        keys.sort();
        keys
    }

    /// Number of objects in the bucket.
    /// Bytes the server has sent to clients through the relay (every
    /// response: headers and bodies) since it started or restarted.
    pub fn bytes_served(&self) -> u64 {
        self.relay
            .as_ref()
            .map(|r| r.served.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub fn object_count(&self) -> usize {
        self.list_keys().len()
    }

    /// The object's bytes, None if it does not exist.
    pub fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        let r = self.moto("GET", &self.object_path(key), b"");
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!(
                "S3Server: GET {key:?}: HTTP {s}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }

    /// Writes an object directly (e.g. to corrupt or plant ciphertext).
    pub fn put_object(&self, key: &str, data: &[u8]) {
        let r = self.moto("PUT", &self.object_path(key), data);
        if r.status != 200 {
            panic!(
                "S3Server: PUT {key:?}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }

    /// Deletes an object directly (e.g. to simulate a lost chunk).
    pub fn delete_object(&self, key: &str) {
        let r = self.moto("DELETE", &self.object_path(key), b"");
        if r.status != 204 && r.status != 200 {
            panic!("S3Server: DELETE {key:?}: HTTP {}", r.status);
        }
    }

    /// Sets the bucket's default Object Lock retention (moto accepts it
    /// only while the bucket is empty).
    pub fn set_default_retention(&self, mode: &str, days: u64) {
        let body = format!(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>\
             <DefaultRetention><Mode>{mode}</Mode><Days>{days}</Days></DefaultRetention></Rule>\
             </ObjectLockConfiguration>"
        );
        let path = format!("/{}?object-lock", percent_encode(&self.bucket, false));
        let r = self.moto("PUT", &path, body.as_bytes());
        assert_eq!(
            r.status,
            200,
            "S3Server: default retention: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    /// The version ids of `key` (ListObjectVersions; a bucket with Object
    /// Lock is versioned), delete markers excluded.
    pub fn version_ids(&self, key: &str) -> Vec<String> {
        let path = format!(
            "/{}?versions&prefix={}",
            percent_encode(&self.bucket, false),
            percent_encode(key, false)
        );
        let r = self.moto("GET", &path, b"");
        let xml = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 200, "S3Server: list versions of {key:?}: {xml}");
        xml.split("<Version>")
            .skip(1)
            .filter(|v| xml_tags(v, "Key").first().map(|k| xml_unescape(k)) == Some(key.into()))
            .filter_map(|v| xml_tags(v, "VersionId").first().map(|s| s.to_string()))
            .collect()
    }

    /// Deletes one version of `key` directly (what a thief with the
    /// credentials would do); returns the HTTP status.
    pub fn delete_version(&self, key: &str, version: &str) -> u16 {
        let path = format!(
            "{}?versionId={}",
            self.object_path(key),
            percent_encode(version, false)
        );
        self.moto("DELETE", &path, b"").status
    }

    /// Hard outage: connects to `endpoint` are refused and open connections
    /// are reset. moto keeps running, so objects survive until `restart()`.
    pub fn stop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
    }

    /// Ends `stop()`: listens on the same port again.
    pub fn restart(&mut self) {
        if self.relay.is_none() {
            let relay = TcpRelay::start(self.port, self.moto_port).unwrap_or_else(|e| {
                panic!(
                    "S3Server::restart: cannot listen on 127.0.0.1:{} again: {e}",
                    self.port
                )
            });
            self.relay = Some(relay);
        }
    }

    /// True between `stop()` and `restart()`.
    pub fn is_stopped(&self) -> bool {
        self.relay.is_none()
    }

    /// SIGKILLs moto and starts a new one on the same (internal) port, then
    /// re-creates the bucket: every object is lost (moto is in-memory).
    pub fn crash_restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_or_panic();
        }
        let (proc, _) = Self::spawn_moto(&self.dir, Some(self.moto_port));
        self.proc = Some(proc);
        self.create_bucket();
    }

    /// Unreachable/hung backend: SIGSTOP moto. Connects still succeed (relay
    /// and listen backlog) but no request gets an answer until `resume()`.
    pub fn pause(&self) {
        self.proc
            .as_ref()
            .expect("moto_server is running (not stopped)")
            .pause();
    }

    pub fn resume(&self) {
        self.proc
            .as_ref()
            .expect("moto_server is running (not stopped)")
            .resume();
    }

    /// moto's output (stdout+stderr) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.proc().log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut p) = self.proc.take() {
            p.kill_or_panic();
        }
    }
}

// ---------------------------------------------------------------------------
// WebDAV: wsgidav
// ---------------------------------------------------------------------------

/// A real WebDAV server (wsgidav on cheroot) on 127.0.0.1, basic auth,
/// serving `root_dir` read-write as `/`.
///
/// OpenDAL: `endpoint`, `username`, `password`. Files the backend writes
/// appear under `root_dir`, so tests can inspect or damage them directly.
pub struct WebdavServer {
    /// `http://127.0.0.1:PORT`, deliberately without a trailing slash:
    /// OpenDAL's webdav service appends the rooted path (`/root/...`) to the
    /// endpoint as is, and `http://h:p//root/...` is answered 400 by cheroot.
    pub endpoint: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// The directory served as `/`.
    pub root_dir: PathBuf,
    pub started_in: Duration,
    config: PathBuf,
    proc: Option<ServerProc>,
    dir: TestDir,
}

impl WebdavServer {
    pub fn start() -> WebdavServer {
        let t0 = Instant::now();
        let mut dir = Some(TestDir::new("webdav"));
        let root_dir = dir.as_ref().unwrap().path.join("root");
        fs::create_dir_all(&root_dir).expect("create webdav root");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let username = "tresor".to_string();
        let password = format!("pw-{}-{nanos:x}", std::process::id());
        let config = dir.as_ref().unwrap().path.join("wsgidav.json");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut s = WebdavServer {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                username: username.clone(),
                password: password.clone(),
                root_dir: root_dir.clone(),
                started_in: Duration::ZERO,
                config: config.clone(),
                proc: None,
                dir: dir.take().unwrap(),
            };
            s.write_config();
            match s.spawn() {
                Ok(proc) => {
                    s.proc = Some(proc);
                    s.started_in = t0.elapsed();
                    return s;
                }
                Err((e, retry)) => {
                    if !retry {
                        panic!("WebdavServer: {e}");
                    }
                    last = e;
                    // Keep the dir for the next attempt; `s` drops an empty one.
                    dir = Some(std::mem::replace(
                        &mut s.dir,
                        TestDir {
                            path: PathBuf::new(),
                        },
                    ));
                }
            }
        }
        panic!("WebdavServer: no free port after {START_ATTEMPTS} attempts: {last}");
    }

    fn write_config(&self) {
        let config = format!(
            r#"{{
  "host": "127.0.0.1",
  "port": {port},
  "server": "cheroot",
  "provider_mapping": {{ "/": {root} }},
  "http_authenticator": {{
    "domain_controller": null,
    "accept_basic": true,
    "accept_digest": false,
    "default_to_digest": false,
    "trusted_auth_header": null
  }},
  "simple_dc": {{ "user_mapping": {{ "*": {{ {user}: {{ "password": {pass}, "roles": [] }} }} }} }},
  "dir_browser": {{ "enable": false }},
  "lock_storage": true,
  "property_manager": true,
  "verbose": 3
}}
"#,
            port = self.port,
            root = json_str(&self.root_dir.to_string_lossy()),
            user = json_str(&self.username),
            pass = json_str(&self.password),
        );
        write_file(&self.config, config.as_bytes(), 0o600);
    }

    fn auth_header(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }

    /// Spawns wsgidav and waits until PROPFIND / answers 401 without and 207
    /// with credentials. Err((message, port lost to someone else)).
    fn spawn(&self) -> Result<ServerProc, (String, bool)> {
        let mut cmd = Command::new(program("TRESOR_WSGIDAV", "wsgidav"));
        cmd.arg("-c").arg(&self.config).env("PYTHONUNBUFFERED", "1");
        let mut proc = ServerProc::spawn("wsgidav", cmd, &self.dir.path);
        let (port, auth) = (self.port, self.auth_header());
        let ready = proc.wait_ready(
            &format!("wsgidav on 127.0.0.1:{port} to answer PROPFIND / with 401 without auth and 207 with auth"),
            START_TIMEOUT,
            || {
                let depth = [("Depth", "0")];
                let anon = http_request(port, "PROPFIND", "/", &depth, b"", REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
                if anon.status != 401 {
                    return Err(format!("PROPFIND / without auth: HTTP {} (want 401)", anon.status));
                }
                let authed = http_request(port, "PROPFIND", "/", &[("Depth", "0"), ("Authorization", &auth)], b"", REQUEST_TIMEOUT)
                    .map_err(|e| e.to_string())?;
                if authed.status != 207 && authed.status != 200 {
                    return Err(format!("PROPFIND / with auth: HTTP {} (want 207)", authed.status));
                }
                Ok(())
            },
        );
        match ready {
            Ok(()) => Ok(proc),
            Err(e) => {
                let retry = log_says_addr_in_use(&proc);
                proc.kill();
                Err((e, retry))
            }
        }
    }

    /// Unreachable/hung backend: SIGSTOP wsgidav until `resume()`.
    pub fn pause(&self) {
        self.proc
            .as_ref()
            .expect("wsgidav is running (not stopped)")
            .pause();
    }

    pub fn resume(&self) {
        self.proc
            .as_ref()
            .expect("wsgidav is running (not stopped)")
            .resume();
    }

    /// Hard outage: SIGKILL wsgidav (connects refused). Files stay on disk.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_or_panic();
        }
    }

    /// Starts wsgidav again on the same port with the same credentials.
    pub fn restart(&mut self) {
        self.stop();
        match self.spawn() {
            Ok(p) => self.proc = Some(p),
            Err((e, _)) => panic!("WebdavServer::restart: {e}"),
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.proc.is_none()
    }

    /// wsgidav's output (stdout+stderr) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("wsgidav.log")).unwrap_or_default()
    }
}

impl Drop for WebdavServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// SFTP: sshd
// ---------------------------------------------------------------------------

/// A real sshd (OpenSSH, `internal-sftp`) on 127.0.0.1 with a fresh ed25519
/// host key and client key, public-key login for the current user only.
///
/// OpenDAL: `endpoint`, `user`, `key` = `key_path`, `root` = `root_dir`
/// (absolute). For host key checking see the module doc: run the process
/// using OpenDAL with [`SftpServer::ssh_env`] and keep the default
/// `known_hosts_strategy` (strict); or use `known_hosts_strategy=accept`,
/// which writes to `~/.ssh/known_hosts`.
///
/// Plain OpenSSH clients: `ssh -i KEY -o UserKnownHostsFile=KNOWN_HOSTS
/// -o StrictHostKeyChecking=yes -p PORT USER@127.0.0.1`; ControlMaster
/// multiplexing (`ssh -M -S ctl`, what the `openssh` crate does) works.
pub struct SftpServer {
    /// `ssh://USER@127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    pub user: String,
    /// Client private key (ed25519, 0600, no passphrase).
    pub key_path: PathBuf,
    /// `[127.0.0.1]:PORT ssh-ed25519 ...` for this server's host key.
    pub known_hosts: PathBuf,
    /// An absolute, empty, writable directory for the backend root.
    pub root_dir: PathBuf,
    /// Directory holding the `ssh` wrapper that `ssh_env()` puts on PATH.
    pub ssh_wrapper_dir: PathBuf,
    pub started_in: Duration,
    config: PathBuf,
    proc: Option<ServerProc>,
    dir: TestDir,
}

fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; we copy
    // the name out immediately.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

fn find_in_path(name: &str, skip: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| d != skip)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn ssh_keygen(path: &Path, comment: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path);
    let (status, out, err) = run_bounded(cmd, REQUEST_TIMEOUT);
    if !status.is_some_and(|s| s.success()) {
        panic!(
            "SftpServer: ssh-keygen {} failed ({status:?}): {out}{err}",
            path.display()
        );
    }
}

impl SftpServer {
    pub fn start() -> SftpServer {
        let t0 = Instant::now();
        let dir = TestDir::new("sftp");
        let d = dir.path.clone();
        if d.to_string_lossy().contains(char::is_whitespace) {
            panic!(
                "SftpServer: temp dir {} contains whitespace (ssh options would split it)",
                d.display()
            );
        }
        // sshd's privilege separation directory (absent until sshd ran once).
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let _ = fs::create_dir_all("/run/sshd");
            let _ = fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755));
        }
        let host_key = d.join("ssh_host_ed25519_key");
        let key_path = d.join("id_ed25519");
        ssh_keygen(&host_key, "tresor-test-host");
        ssh_keygen(&key_path, "tresor-test-client");
        let client_pub = fs::read_to_string(d.join("id_ed25519.pub")).expect("read client pubkey");
        write_file(&d.join("authorized_keys"), client_pub.as_bytes(), 0o600);
        let root_dir = d.join("root");
        fs::create_dir_all(&root_dir).expect("create sftp root");

        let ssh_wrapper_dir = d.join("bin");
        fs::create_dir_all(&ssh_wrapper_dir).expect("create wrapper dir");
        let real_ssh = find_in_path("ssh", &ssh_wrapper_dir)
            .or_else(|| Some(PathBuf::from("/usr/bin/ssh")).filter(|p| p.is_file()))
            .unwrap_or_else(|| {
                panic!("SftpServer: no `ssh` client on PATH (install openssh-client)")
            });
        let known_hosts = d.join("known_hosts");
        write_file(
            &ssh_wrapper_dir.join("ssh"),
            format!(
                "#!/bin/sh\n# tresor test fixture: trust exactly this server's host key\n\
                 exec {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \"$@\"\n",
                real_ssh.display(),
                known_hosts.display()
            )
            .as_bytes(),
            0o755,
        );

        let user = current_user();
        let config = d.join("sshd_config");
        let mut last = String::new();
        let mut dir = Some(dir);
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let host_pub =
                fs::read_to_string(d.join("ssh_host_ed25519_key.pub")).expect("read host pubkey");
            let mut it = host_pub.split_whitespace();
            let (kt, kb) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            write_file(
                &known_hosts,
                format!("[127.0.0.1]:{port} {kt} {kb}\n").as_bytes(),
                0o644,
            );
            write_file(
                &config,
                format!(
                    "# tresor test fixture\n\
                     Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     AddressFamily inet\n\
                     HostKey {hk}\n\
                     PidFile {pid}\n\
                     AuthorizedKeysFile {ak}\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     Subsystem sftp internal-sftp\n\
                     AllowUsers {user}\n\
                     MaxStartups 100:30:200\n\
                     MaxSessions 100\n\
                     UseDNS no\n\
                     PrintMotd no\n\
                     X11Forwarding no\n\
                     AllowAgentForwarding no\n\
                     LogLevel INFO\n",
                    hk = host_key.display(),
                    pid = d.join("sshd.pid").display(),
                    ak = d.join("authorized_keys").display(),
                )
                .as_bytes(),
                0o600,
            );
            let mut s = SftpServer {
                endpoint: format!("ssh://{user}@127.0.0.1:{port}"),
                port,
                user: user.clone(),
                key_path: key_path.clone(),
                known_hosts: known_hosts.clone(),
                root_dir: root_dir.clone(),
                ssh_wrapper_dir: ssh_wrapper_dir.clone(),
                started_in: Duration::ZERO,
                config: config.clone(),
                proc: None,
                dir: dir.take().unwrap(),
            };
            match s.spawn() {
                Ok(p) => {
                    s.proc = Some(p);
                    s.started_in = t0.elapsed();
                    return s;
                }
                Err((e, retry)) => {
                    if !retry {
                        panic!("SftpServer: {e}");
                    }
                    last = e;
                    dir = Some(std::mem::replace(
                        &mut s.dir,
                        TestDir {
                            path: PathBuf::new(),
                        },
                    ));
                }
            }
        }
        panic!("SftpServer: no free port after {START_ATTEMPTS} attempts: {last}");
    }

    /// `ssh` with this server's key, known_hosts (strict), port, user --
    /// append the remote command. `-F /dev/null`: no user/system config.
    pub fn ssh_command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
        .args(["-o", "ConnectTimeout=10", "-i"])
        .arg(&self.key_path)
        .args(["-p", &self.port.to_string(), "-l", &self.user, "127.0.0.1"]);
        cmd
    }

    /// Variables for the process that runs OpenDAL's sftp service (e.g. the
    /// `tresor` binary): `PATH` with [`Self::ssh_wrapper_dir`] first, so the
    /// `ssh` the `openssh` crate runs checks the host key against
    /// [`Self::known_hosts`] instead of `~/.ssh/known_hosts`.
    pub fn ssh_env(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        vec![(
            "PATH".into(),
            format!("{}:{path}", self.ssh_wrapper_dir.display()),
        )]
    }

    /// Spawns sshd and waits until the port accepts and `ssh ... true`
    /// succeeds with strict host key checking.
    fn spawn(&self) -> Result<ServerProc, (String, bool)> {
        let mut cmd = Command::new(program("TRESOR_SSHD", "/usr/sbin/sshd"));
        cmd.arg("-D").arg("-e").arg("-f").arg(&self.config);
        let mut proc = ServerProc::spawn("sshd", cmd, &self.dir.path);
        let port = self.port;
        let mut listening = false;
        let ready = proc.wait_ready(
            &format!("sshd on 127.0.0.1:{port} to accept TCP and then `ssh ... true` (strict host key) to succeed"),
            START_TIMEOUT,
            || {
                if !listening {
                    if !port_accepts(port) {
                        return Err("port not accepting yet".into());
                    }
                    listening = true;
                }
                let mut cmd = self.ssh_command();
                cmd.arg("true");
                match run_bounded(cmd, REQUEST_TIMEOUT) {
                    (Some(s), _, _) if s.success() => Ok(()),
                    (status, out, err) => Err(format!("ssh true: {status:?} {out}{err}")),
                }
            },
        );
        match ready {
            Ok(()) => Ok(proc),
            Err(e) => {
                let retry = log_says_addr_in_use(&proc);
                proc.kill();
                Err((e, retry))
            }
        }
    }

    /// Unreachable/hung backend: SIGSTOP sshd and every connection process
    /// (open ControlMaster connections hang too) until `resume()`.
    pub fn pause(&self) {
        self.proc
            .as_ref()
            .expect("sshd is running (not stopped)")
            .pause();
    }

    pub fn resume(&self) {
        self.proc
            .as_ref()
            .expect("sshd is running (not stopped)")
            .resume();
    }

    /// Hard outage: SIGKILL sshd and all its connection processes (connects
    /// refused, open sessions cut). Files stay on disk.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_or_panic();
        }
    }

    /// Starts sshd again on the same port with the same host key.
    pub fn restart(&mut self) {
        self.stop();
        match self.spawn() {
            Ok(p) => self.proc = Some(p),
            Err((e, _)) => panic!("SftpServer::restart: {e}"),
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.proc.is_none()
    }

    /// sshd's output (stderr, `-e`) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl super::TestVault {
    /// `tresor backend add NAME --s3 …` for `s3` (the secret goes through a
    /// file in scratch), operated by "Loopback Storage GmbH"; unchecked.
    /// `backend add box --sftp USER@127.0.0.1:PORT` with the server's key,
    /// root `ROOT/tresor`, data in FI; sets the ssh environment the
    /// server needs on this vault's commands from here on.
    pub fn add_sftp_box(&mut self, sftp: &SftpServer) -> super::Run {
        self.env = sftp.ssh_env();
        let root = sftp.root_dir.join("tresor");
        let target = format!("{}@127.0.0.1:{}", sftp.user, sftp.port);
        let mut cmd = self.cmd();
        cmd.args(["backend", "add", "box", "--vault"])
            .arg(&self.vault)
            .args([
                "--sftp",
                &target,
                "--key",
                sftp.key_path.to_str().unwrap(),
                "--root",
                root.to_str().unwrap(),
                "--location",
                "FI",
                "--operator",
                "Example Oy",
                "--operator-country",
                "FI",
            ]);
        super::run_bounded(&mut cmd, Duration::from_secs(120))
    }

    pub fn add_s3(
        &self,
        s3: &S3Server,
        name: &str,
        location: &str,
        operator_country: &str,
    ) -> super::Run {
        let keyfile = self.scratch.join(format!("{name}.secret"));
        fs::write(&keyfile, format!("{}\n", s3.secret_access_key)).unwrap();
        self.tresor_cmd(
            &["backend", "add", name],
            &[
                "--s3",
                "--endpoint",
                &s3.endpoint,
                "--region",
                &s3.region,
                "--bucket",
                &s3.bucket,
                "--access-key-id",
                &s3.access_key_id,
                "--secret-access-key-file",
                keyfile.to_str().unwrap(),
                "--location",
                location,
                "--operator",
                "Loopback Storage GmbH",
                "--operator-country",
                operator_country,
            ],
            false,
        )
    }
}

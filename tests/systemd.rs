//! `tresor systemd install|uninstall`: the unit file (checked with
//! `systemd-analyze verify --user`), its commands run the way systemd runs
//! them (Type=notify readiness, ExecStop, SIGTERM while busy), and the
//! keyring path with a stand-in `secret-tool`.
//!
//! `systemd-analyze verify --user` needs no running systemd, but it needs
//! an existing XDG_RUNTIME_DIR (else "Failed to initialize manager: No such
//! device or address"), and `--generators=no`. Documentation=man:tresor-systemd(1)
//! is checked against the man pages `tresor man --out` generates (MANPATH).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STEP: Duration = Duration::from_secs(120);

/// A vault plus a private XDG_CONFIG_HOME / HOME / XDG_RUNTIME_DIR.
struct Env {
    v: TestVault,
    config: PathBuf,
    home: PathBuf,
    runtime: PathBuf,
}

impl Env {
    fn new(v: TestVault) -> Env {
        let config = v.root_path.join("config");
        let home = v.root_path.join("home");
        let runtime = v.root_path.join("runtime");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&runtime).unwrap();
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&v.passfile, fs::Permissions::from_mode(0o600)).unwrap();
        Env {
            v,
            config,
            home,
            runtime,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = self.v.cmd();
        c.env("XDG_CONFIG_HOME", &self.config)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("NOTIFY_SOCKET");
        c
    }

    fn tresor(&self, args: &[&str]) -> Run {
        run_bounded(self.cmd().args(args), STEP)
    }

    fn unit_dir(&self) -> PathBuf {
        self.config.join("systemd/user")
    }
}

fn systemd_escape_path(p: &Path) -> String {
    run_tool("systemd-escape", &["--path".as_ref(), p.as_os_str()])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// `systemd-analyze verify --user` on `unit`; returns the run.
fn verify(env: &Env, unit: &Path, manpath: Option<&Path>) -> Run {
    let mut c = Command::new("systemd-analyze");
    c.args(["verify", "--user", "--generators=no"]);
    if manpath.is_none() {
        c.arg("--man=no");
    }
    c.arg(unit)
        .env("XDG_CONFIG_HOME", &env.config)
        .env("XDG_RUNTIME_DIR", &env.runtime)
        .env("HOME", &env.home)
        .current_dir(&env.v.root_path);
    if let Some(m) = manpath {
        c.env("MANPATH", m);
    }
    run_bounded(&mut c, STEP)
}

/// The value of `Key=` in a unit, split into words (no quoting in these tests).
fn unit_words(text: &str, key: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{text}"));
    assert!(!line.contains('"'), "test paths need no quoting: {line}");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn install_writes_a_unit_systemd_accepts_and_uninstall_removes_it() {
    require_tool("systemd-analyze", "systemd");
    require_tool("systemd-escape", "systemd");
    let env = Env::new(TestVault::new_unchecked());
    // a space and a % in the mountpoint exercise the unit's quoting
    let mnt = env.v.root_path.join("My Tresor 100%");
    let (vault, pass) = (
        env.v.vault.to_str().unwrap(),
        env.v.passfile.to_str().unwrap(),
    );
    let r = env
        .tresor(&[
            "systemd",
            "install",
            "--vault",
            vault,
            "--passphrase-file",
            pass,
            mnt.to_str().unwrap(),
        ])
        .ok();
    let name = format!("tresor-{}.service", systemd_escape_path(&mnt));
    let unit = env.unit_dir().join(&name);
    assert!(unit.is_file(), "no {}:\n{r}", unit.display());
    assert!(
        r.stdout
            .contains(&format!("systemctl --user enable --now {name}")),
        "{r}"
    );
    assert!(mnt.is_dir(), "install creates the mountpoint");
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        !text.contains(PASSPHRASE),
        "the passphrase must never be in the unit"
    );
    assert!(text.contains("Type=notify\n"), "{text}");
    assert!(
        text.contains(&format!(
            "\"{}\"",
            mnt.display().to_string().replace('%', "%%")
        )),
        "quoted mountpoint with %% in:\n{text}"
    );
    let exe = tresor_bin().canonicalize().unwrap();
    assert!(
        text.contains(&format!("ExecStart={} mount --foreground", exe.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("ExecStop={} unmount", exe.display())),
        "{text}"
    );

    let r = verify(&env, &unit, None);
    assert!(
        r.success() && r.stderr.trim().is_empty(),
        "systemd-analyze verify: {r}"
    );
    // Documentation=man:tresor-systemd(1) resolves against the generated pages.
    let man = env.v.root_path.join("man");
    env.tresor(&["man", "--out", man.join("man1").to_str().unwrap()])
        .ok();
    let r = verify(&env, &unit, Some(&man));
    assert!(
        r.success() && r.stderr.trim().is_empty(),
        "systemd-analyze verify with man pages: {r}"
    );

    // a second install needs --force
    let r = env
        .tresor(&[
            "systemd",
            "install",
            "--vault",
            vault,
            "--passphrase-file",
            pass,
            mnt.to_str().unwrap(),
        ])
        .failed();
    assert!(r.stderr.contains("--force"), "{r}");
    env.tresor(&[
        "systemd",
        "install",
        "--force",
        "--vault",
        vault,
        "--passphrase-file",
        pass,
        mnt.to_str().unwrap(),
    ])
    .ok();

    let r = env
        .tresor(&["systemd", "uninstall", mnt.to_str().unwrap()])
        .ok();
    assert!(
        !unit.exists(),
        "uninstall must remove {}: {r}",
        unit.display()
    );
    let r = env
        .tresor(&["systemd", "uninstall", mnt.to_str().unwrap()])
        .failed();
    assert!(r.stderr.contains("no tresor unit for"), "{r}");
}

#[test]
fn install_refuses_unsafe_or_wrong_passphrase_sources() {
    let env = Env::new(TestVault::new_unchecked());
    let mnt = env.v.root_path.join("mnt2");
    let (vault, mnt_s) = (env.v.vault.to_str().unwrap(), mnt.to_str().unwrap());
    let open = env.v.root_path.join("open-passphrase");
    fs::write(&open, format!("{PASSPHRASE}\n")).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let r = env
        .tresor(&[
            "systemd",
            "install",
            "--vault",
            vault,
            "--passphrase-file",
            open.to_str().unwrap(),
            mnt_s,
        ])
        .failed();
    assert_eq!(r.status.code(), Some(1), "{r}");
    assert!(r.stderr.contains("chmod 600"), "{r}");

    let wrong = env.v.root_path.join("wrong-passphrase");
    fs::write(&wrong, "nope\n").unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    let r = env
        .tresor(&[
            "systemd",
            "install",
            "--vault",
            vault,
            "--passphrase-file",
            wrong.to_str().unwrap(),
            mnt_s,
        ])
        .failed();
    assert_eq!(r.status.code(), Some(3), "wrong passphrase: {r}");

    // neither source, and no keyring here (no session bus)
    let r = env
        .tresor(&["systemd", "install", "--vault", vault, mnt_s])
        .failed();
    assert_eq!(r.status.code(), Some(2), "{r}");
    assert!(r.stderr.contains("--passphrase-file FILE"), "{r}");
    assert!(!env.unit_dir().exists() || fs::read_dir(env.unit_dir()).unwrap().next().is_none());
}
#[test]
fn keyring_install_stores_once_and_lookup_unlocks() {
    let env = Env::new(TestVault::new_unchecked());
    let bin = fake_secret_tool(&env.v.root_path);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let with_keyring = |args: &[&str], passphrase: Option<&str>| {
        let mut c = env.cmd();
        c.args(args).env("PATH", &path).env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/fake-bus",
        );
        if let Some(p) = passphrase {
            c.env("TRESOR_PASSPHRASE", p);
        }
        run_bounded(&mut c, STEP)
    };
    let vault = env.v.vault.to_str().unwrap();
    let mnt = env.v.root_path.join("kmnt");
    // a wrong passphrase is refused before anything is stored
    let r = with_keyring(
        &[
            "systemd",
            "install",
            "--vault",
            vault,
            "--keyring",
            mnt.to_str().unwrap(),
        ],
        Some("wrong"),
    )
    .failed();
    assert_eq!(r.status.code(), Some(3), "{r}");
    assert!(fs::read_dir(bin.join("secrets")).unwrap().next().is_none());
    // no flag: the keyring is chosen because it is available
    let r = with_keyring(
        &[
            "systemd",
            "install",
            "--vault",
            vault,
            mnt.to_str().unwrap(),
        ],
        Some(PASSPHRASE),
    )
    .ok();
    assert!(
        r.stdout
            .contains("Stored the passphrase in the desktop keyring"),
        "{r}"
    );
    let units: Vec<_> = fs::read_dir(env.unit_dir()).unwrap().collect();
    assert_eq!(units.len(), 1, "one unit expected");
    let unit = fs::read_to_string(units[0].as_ref().unwrap().path()).unwrap();
    assert!(unit.contains(" --keyring "), "{unit}");
    assert!(!unit.contains(PASSPHRASE));
    let argv = fs::read_to_string(bin.join("argv.log")).unwrap();
    assert!(
        !argv.contains(PASSPHRASE),
        "the passphrase must not be in secret-tool's argv:\n{argv}"
    );
    assert!(argv.contains("service tresor vault "), "{argv}");

    // the unit's way in: `--keyring` finds it (status needs no mount)
    let r = with_keyring(&["status", "--vault", vault, "--keyring", "--json"], None).ok();
    assert!(r.stdout.contains("\"vault_id\""), "{r}");
    // installing again with a stored, working passphrase asks for nothing
    let r = with_keyring(
        &[
            "systemd",
            "install",
            "--force",
            "--vault",
            vault,
            "--keyring",
            mnt.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    assert!(!r.stdout.contains("Stored"), "{r}");
    // a wrong stored passphrase gives the wrong-passphrase exit code
    for e in fs::read_dir(bin.join("secrets")).unwrap() {
        fs::write(e.unwrap().path(), "stale").unwrap();
    }
    let r = with_keyring(&["status", "--vault", vault, "--keyring"], None).failed();
    assert_eq!(r.status.code(), Some(3), "{r}");
    // and no entry at all says how to store one
    for e in fs::read_dir(bin.join("secrets")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let r = with_keyring(&["status", "--vault", vault, "--keyring"], None).failed();
    assert!(r.stderr.contains("secret-tool store"), "{r}");
}

/// Waits for a datagram on `sock` containing `want`; returns everything received.
fn wait_notify(sock: &UnixDatagram, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} from the service within {timeout:?}; got {got:?}"
        );
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            got.push('\n');
        }
    }
    got
}

/// Runs the unit's ExecStart as systemd would (Type=notify), then ExecStop;
/// then again, stopping with SIGTERM while a file is open (logout with a
/// busy mount): everything written must survive both.
#[test]
fn unit_commands_notify_ready_and_stop_cleanly() {
    let Some(v) = TestVault::new() else {
        return;
    };
    let mut env = Env::new(v);
    let (vault, pass, mnt) = (
        env.v.vault.to_str().unwrap().to_string(),
        env.v.passfile.to_str().unwrap().to_string(),
        env.v.mnt.to_str().unwrap().to_string(),
    );
    let r = env
        .tresor(&[
            "systemd",
            "install",
            "--print",
            "--vault",
            &vault,
            "--passphrase-file",
            &pass,
            &mnt,
        ])
        .ok();
    let start = unit_words(&r.stdout, "ExecStart");
    let stop = unit_words(&r.stdout, "ExecStop");
    let sock_path = env.runtime.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let start_service = |log: &str| {
        Command::new(&start[0])
            .args(&start[1..])
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("TRESOR_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(env.v.root_path.join(log)).unwrap())
            .spawn()
            .expect("run ExecStart")
    };
    let wait_exit = |child: &mut std::process::Child, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the service's main process did not exit within 60 s after {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // 1. start, READY=1 only once mounted, ExecStop
    let mut main = start_service("service1.err");
    let got = wait_notify(&sock, "READY=1", Duration::from_secs(120));
    assert!(
        is_fuse_mounted(&env.v.mnt),
        "READY=1 ({got:?}) arrived before the mount existed"
    );
    fs::write(env.v.path("via-unit"), b"written while the unit ran").unwrap();
    let r = run_bounded(Command::new(&stop[0]).args(&stop[1..]), STEP);
    assert!(r.success(), "ExecStop failed: {r}");
    let st = wait_exit(&mut main, "ExecStop");
    assert!(st.success(), "main process exited with {st}");
    assert!(!is_fuse_mounted(&env.v.mnt));

    // 2. SIGTERM while a file is open: flushed, committed, detached lazily
    let mut main = start_service("service2.err");
    wait_notify(&sock, "READY=1", Duration::from_secs(120));
    let mut open = fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(env.v.path("open-at-logout"))
        .unwrap();
    open.write_all(b"still open at logout").unwrap();
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(main.id() as i32, libc::SIGTERM) };
    wait_until(
        "the busy mount to be detached after SIGTERM",
        Duration::from_secs(60),
        || !is_fuse_mounted(&env.v.mnt),
    );
    // the open file keeps working until closed
    let mut back = String::new();
    use std::io::Seek;
    open.seek(std::io::SeekFrom::Start(0)).unwrap();
    open.read_to_string(&mut back).unwrap();
    assert_eq!(back, "still open at logout");
    drop(open);
    let st = wait_exit(&mut main, "SIGTERM and closing the last file");
    let err = fs::read_to_string(env.v.root_path.join("service2.err")).unwrap();
    assert!(
        st.success(),
        "main process exited with {st}; its stderr:\n{err}"
    );
    assert!(err.contains("detaching lazily"), "{err}");

    env.v.mount();
    assert_content(&env.v.path("via-unit"), b"written while the unit ran");
    assert_content(&env.v.path("open-at-logout"), b"still open at logout");
    env.v.unmount();
    drop(sock);
    let _ = fs::remove_file(&sock_path);
}

/// The template unit the Debian package installs (`tresor systemd
/// template`): systemd accepts an instance of it, and its commands, with
/// `%h` and `%i` expanded as systemd expands them, mount the vault
/// `~/.local/share/tresor/NAME` on `~/NAME` with the keyring's passphrase
/// and unmount it with everything written kept.
#[test]
fn packaged_template_unit_verifies_and_its_commands_mount() {
    require_tool("systemd-analyze", "systemd");
    let Some(v) = TestVault::new() else {
        return;
    };
    let env = Env::new(v);
    let bin = tresor_bin();
    let r = env
        .tresor(&["systemd", "template", "--exe", bin.to_str().unwrap()])
        .ok();
    let text = r.stdout;
    assert!(text.contains("Type=notify\n"), "{text}");
    // systemd-analyze checks an instance; its file is the template's text.
    let dir = env.unit_dir();
    fs::create_dir_all(&dir).unwrap();
    let instance = dir.join("tresor@demo.service");
    fs::write(&instance, &text).unwrap();
    let r = verify(&env, &instance, None);
    assert!(r.success() && r.stderr.trim().is_empty(), "{r}");

    // The commands, expanded: a vault named demo in the test's HOME.
    let home = env.home.to_str().unwrap().to_string();
    let expand = |words: Vec<String>| -> Vec<String> {
        words
            .into_iter()
            .map(|w| w.replace("%h", &home).replace("%i", "demo"))
            .collect()
    };
    let vault = env.home.join(".local/share/tresor/demo");
    let r = env.tresor(&[
        "init",
        "--vault",
        vault.to_str().unwrap(),
        "--passphrase-file",
        env.v.passfile.to_str().unwrap(),
    ]);
    assert!(r.success(), "{r}");
    let fakebin = fake_secret_tool(&env.v.root_path);
    let id = {
        let r = env
            .tresor(&[
                "status",
                "--json",
                "--vault",
                vault.to_str().unwrap(),
                "--passphrase-file",
                env.v.passfile.to_str().unwrap(),
            ])
            .ok();
        let j: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        j["vault_id"].as_str().unwrap().to_string()
    };
    fs::write(
        fakebin
            .join("secrets")
            .join(format!("service_tresor_vault_{id}")),
        PASSPHRASE,
    )
    .unwrap();
    let path = format!("{}:{}", fakebin.display(), std::env::var("PATH").unwrap());
    let pre = expand(unit_words(&text, "ExecStartPre"));
    let start = expand(unit_words(&text, "ExecStart"));
    let stop = expand(unit_words(&text, "ExecStop"));
    let r = run_bounded(Command::new(&pre[0]).args(&pre[1..]), STEP);
    assert!(r.success(), "ExecStartPre: {r}");
    let mnt = env.home.join("demo");
    assert!(mnt.is_dir());
    let mut main = Command::new(&start[0])
        .args(&start[1..])
        .env("HOME", &env.home)
        .env("PATH", &path)
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/fake-bus",
        )
        .env_remove("TRESOR_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(env.v.root_path.join("template.err")).unwrap())
        .spawn()
        .expect("run ExecStart");
    wait_until("the template's mount", Duration::from_secs(120), || {
        is_fuse_mounted(&mnt) || main.try_wait().unwrap().is_some()
    });
    assert!(
        is_fuse_mounted(&mnt),
        "ExecStart ended without mounting: {}",
        fs::read_to_string(env.v.root_path.join("template.err")).unwrap()
    );
    fs::write(mnt.join("from-the-template"), b"mounted at login").unwrap();
    let r = run_bounded(Command::new(&stop[0]).args(&stop[1..]), STEP);
    assert!(r.success(), "ExecStop: {r}");
    let st = main.wait().unwrap();
    assert!(st.success(), "main process exited with {st}");
    assert!(!is_fuse_mounted(&mnt));
    let r = env.tresor(&[
        "fsck",
        "--vault",
        vault.to_str().unwrap(),
        "--passphrase-file",
        env.v.passfile.to_str().unwrap(),
    ]);
    assert!(r.success(), "fsck after the template's mount: {r}");
}

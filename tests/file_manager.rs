//! A real file manager on a tresor mount: PCManFM (Debian package pcmanfm)
//! under Xvfb opens the mount, and
//! - its window appears and is titled with the mount folder's name,
//! - a screenshot of the screen is non-trivial (many colours, not blank),
//! - selecting everything (Ctrl+A) and copying (Ctrl+C) in the window puts
//!   exactly the mount's files on the X clipboard as file:// URIs: proof
//!   that PCManFM listed this directory through the mount.
//!
//! The screenshot is kept in CARGO_TARGET_TMPDIR/file-manager.png; with
//! TRESOR_UPDATE_SCREENSHOT=1 it also replaces docs/file-manager.png.
//!
//! Skip rule: see tests/desktop (only if `pcmanfm` is missing and
//! TRESOR_REQUIRE_DESKTOP_TESTS is not 1); every other missing tool fails.

mod common;
mod desktop;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use desktop::*;

const SCREEN: (u32, u32) = (1024, 768);

/// Xvfb on a display it picks itself (`-displayfd`); ended on drop.
struct Xvfb {
    display: String,
    guard: GroupGuard,
    _stdout: std::process::ChildStdout,
}

impl Xvfb {
    fn start(log: &Path) -> Xvfb {
        let mut c = Command::new("Xvfb");
        c.args([
            "-displayfd",
            "1",
            "-nolisten",
            "tcp",
            "-noreset",
            "-screen",
            "0",
        ])
        .arg(format!("{}x{}x24", SCREEN.0, SCREEN.1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).expect("Xvfb log"));
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut guard = GroupGuard(Some(c.spawn().expect("start Xvfb")));
        let mut stdout = guard.child().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // the display number arrives on fd 1 followed by a newline; read it
        // in a thread so the wait is bounded
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            let mut b = [0u8; 1];
            while stdout.read(&mut b).map(|n| n == 1).unwrap_or(false) && b[0] != b'\n' {
                got.push(b[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
            stdout
        });
        let display = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(d) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => format!(":{d}"),
            other => {
                guard.end();
                panic!(
                    "Xvfb did not report a display within 30 s ({other:?}); log:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        let stdout = reader.join().unwrap();
        Xvfb {
            display,
            guard,
            _stdout: stdout,
        }
    }

    /// A command on this display.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display);
        c
    }

    /// Runs an X client (xdotool, import, xclip, ...) bounded, unchecked.
    fn run(&self, program: &str, args: &[&OsStr]) -> Run {
        run_bounded(self.cmd(program).args(args), Duration::from_secs(30))
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        self.guard.end();
    }
}

/// Number of distinct colours in a PNG (ImageMagick `identify -format %k`).
fn colours(png: &Path) -> u64 {
    let r = run_tool(
        "identify",
        &["-format".as_ref(), "%w %h %k".as_ref(), png.as_os_str()],
    )
    .ok();
    let f: Vec<u64> = r
        .stdout
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(
        (f[0], f[1]),
        (SCREEN.0 as u64, SCREEN.1 as u64),
        "screenshot size"
    );
    f[2]
}

#[test]
fn pcmanfm_shows_the_mount() {
    if skip_desktop_test("pcmanfm", "pcmanfm") {
        return;
    }
    for (tool, pkg) in [
        ("Xvfb", "xvfb"),
        ("xdotool", "xdotool"),
        ("xclip", "xclip"),
        ("import", "imagemagick"),
        ("identify", "imagemagick"),
        ("dbus-run-session", "dbus"),
    ] {
        require_tool(tool, pkg);
    }
    let Some(v) = TestVault::mounted() else {
        return;
    };

    // a folder a person would recognise
    fs::create_dir(v.path("Holiday Photos 2026")).unwrap();
    fs::write(
        v.path("Holiday Photos 2026/beach.jpg"),
        random_bytes(1, 300_000),
    )
    .unwrap();
    fs::write(v.path("Quarterly Report.odt"), random_bytes(2, 48_000)).unwrap();
    fs::write(
        v.path("Tax Return 2025.pdf"),
        b"%PDF-1.4\n% not really a PDF\n",
    )
    .unwrap();
    fs::write(v.path("Contract (signed).pdf"), random_bytes(3, 1_200_000)).unwrap();
    fs::write(
        v.path("README.txt"),
        b"Everything in this folder is encrypted by tresor.\n",
    )
    .unwrap();
    let expected: BTreeSet<String> = fs::read_dir(&v.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(expected.len(), 5);

    let env = DesktopEnv::new(&v.root_path);
    // window filling the screen, detailed list view (names, sizes, dates)
    let conf = env.config_home.join("pcmanfm/default");
    fs::create_dir_all(&conf).unwrap();
    fs::write(
        conf.join("pcmanfm.conf"),
        format!(
            "[ui]\nwin_width={}\nwin_height={}\nview_mode=list\nshow_hidden=0\n",
            SCREEN.0, SCREEN.1
        ),
    )
    .unwrap();

    let x = Xvfb::start(&v.root_path.join("xvfb.log"));
    let fm_log = v.root_path.join("pcmanfm.log");
    let mut c = env.session_cmd("pcmanfm", &[v.mnt.as_os_str()]);
    c.env("DISPLAY", &x.display)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&fm_log).unwrap())
        .stderr(fs::File::create(v.root_path.join("pcmanfm.err")).unwrap());
    let mut fm = GroupGuard(Some(c.spawn().expect("start dbus-run-session pcmanfm")));
    let fm_logs = || {
        format!(
            "--- pcmanfm stdout ---\n{}\n--- pcmanfm stderr ---\n{}",
            fs::read_to_string(&fm_log).unwrap_or_default(),
            fs::read_to_string(v.root_path.join("pcmanfm.err")).unwrap_or_default()
        )
    };

    // the window appears (bounded poll, not `search --sync`)
    let mut wid = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while wid.is_empty() {
        if let Ok(Some(st)) = fm.child().try_wait() {
            panic!("pcmanfm exited early ({st})\n{}", fm_logs());
        }
        if Instant::now() > deadline {
            panic!("no visible PCManFM window within 60 s\n{}", fm_logs());
        }
        let r = x.run(
            "xdotool",
            &[
                "search".as_ref(),
                "--onlyvisible".as_ref(),
                "--class".as_ref(),
                "pcmanfm".as_ref(),
            ],
        );
        wid = r.stdout.lines().next().unwrap_or("").trim().to_owned();
        if wid.is_empty() {
            thread::sleep(Duration::from_millis(200));
        }
    }

    // its title is the mount folder's name
    let folder = v.mnt.file_name().unwrap().to_string_lossy().into_owned();
    let mut title = String::new();
    wait_until(
        "the PCManFM window title to name the mount folder",
        Duration::from_secs(30),
        || {
            title = x
                .run("xdotool", &["getwindowname".as_ref(), wid.as_ref()])
                .stdout
                .trim()
                .to_owned();
            title == folder
        },
    );
    eprintln!("PCManFM window {wid} on {}: title {title:?}", x.display);

    // screenshot once drawing has settled: two identical consecutive shots
    let shots = v.root_path.join("shots");
    fs::create_dir(&shots).unwrap();
    let shot = |i: u32| -> PathBuf {
        let p = shots.join(format!("shot-{i}.png"));
        x.run(
            "import",
            &["-window".as_ref(), "root".as_ref(), p.as_os_str()],
        )
        .ok();
        p
    };
    let mut prev = shot(0);
    let mut settled = None;
    for i in 1..=60 {
        thread::sleep(Duration::from_millis(500));
        let cur = shot(i);
        if colours(&cur) >= 100 && fs::read(&cur).unwrap() == fs::read(&prev).unwrap() {
            settled = Some(cur);
            break;
        }
        prev = cur;
    }
    let screenshot = settled.unwrap_or_else(|| {
        panic!(
            "the screen did not settle on a non-trivial picture within 30 s; last: {}\n{}",
            prev.display(),
            fm_logs()
        )
    });
    let n = colours(&screenshot);
    eprintln!("screenshot {} has {n} colours", screenshot.display());
    assert!(n >= 100, "screenshot looks blank ({n} colours)");
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-manager.png");
    fs::copy(&screenshot, &kept).unwrap();
    eprintln!("screenshot kept in {}", kept.display());
    if std::env::var("TRESOR_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/file-manager.png");
        fs::copy(&screenshot, &doc).unwrap();
        eprintln!("TRESOR_UPDATE_SCREENSHOT=1: updated {}", doc.display());
    }

    // select all + copy in the window: the clipboard then names exactly the
    // mount's entries (PCManFM listed the directory through the mount)
    let want: BTreeSet<String> = expected
        .iter()
        .map(|n| format!("file://{}", uri_escape(&format!("{}/{n}", v.mnt.display()))))
        .collect();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got != want {
        if Instant::now() > deadline {
            panic!(
                "the clipboard never held the mount's entries after Ctrl+A, Ctrl+C in PCManFM\n\
                 want {want:#?}\ngot {got:#?}\n{}",
                fm_logs()
            );
        }
        x.run(
            "xdotool",
            &["windowfocus".as_ref(), "--sync".as_ref(), wid.as_ref()],
        );
        x.run("xdotool", &["key".as_ref(), "ctrl+a".as_ref()]);
        x.run("xdotool", &["key".as_ref(), "ctrl+c".as_ref()]);
        thread::sleep(Duration::from_millis(300));
        let r = x.run(
            "xclip",
            &[
                "-o".as_ref(),
                "-selection".as_ref(),
                "clipboard".as_ref(),
                "-t".as_ref(),
                "text/uri-list".as_ref(),
            ],
        );
        got = r
            .stdout
            .split(['\r', '\n', '\0'])
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
    }
    eprintln!(
        "PCManFM put {} URIs from the mount on the clipboard",
        got.len()
    );
    fm.end();
}

/// Percent-encodes a path the way GLib writes file:// URIs (unreserved
/// characters, '/' and GLib's allowed sub-delimiters stay).
fn uri_escape(name: &str) -> String {
    let mut s = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

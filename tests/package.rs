//! The Debian package (issue 15, item 7): `scripts/package-deb.sh` builds it, it installs
//! with `dpkg -i` into a throwaway root, and its systemd units pass systemd's own checks.
//!
//! Nothing is installed into the real system: dpkg runs with `--root` on an admin dir made
//! here and `--force-script-chrootless`, so the maintainer scripts run with `DPKG_ROOT` set
//! (systemd-sysusers and deb-systemd-helper write under it). The host's `/etc/passwd` and
//! `/etc/systemd/system` are compared before and after.
//!
//! Needs dpkg-dev, systemd (systemd-analyze, systemd-sysusers) and init-system-helpers
//! (`scripts/setup.sh test`).
#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(cmd: &mut Command) -> Output {
    let out = proc::output(cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// Builds the package of this test build's zring into `dir`; returns its path.
fn build_deb(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package-deb.sh");
    let text = stdout(
        Command::new(script)
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_zring"))
            .arg("--out")
            .arg(dir),
    );
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    let deb = dir.join(format!("zring_{VERSION}_{}.deb", arch.trim()));
    assert_eq!(text.lines().last(), Some(deb.to_str().unwrap()), "{text}");
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

/// An empty root with dpkg's admin dir initialised.
fn dpkg_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(root.join("var/lib/dpkg").join(d)).unwrap();
    }
    for f in ["status", "available"] {
        std::fs::write(root.join("var/lib/dpkg").join(f), "").unwrap();
    }
    root
}

/// `dpkg --root=ROOT ARGS`: scripts run outside a chroot with DPKG_ROOT=ROOT; the root has
/// no libc6 or systemd package, hence `--force-depends`.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-not-root",
            "--force-script-chrootless",
            "--force-depends",
        ])
        .args(args))
}

fn status(root: &Path) -> String {
    let out = proc::output(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${db:Status-Abbrev}", "zring"]),
    )
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the host has that an install into a root must not change.
fn host_state() -> (String, Vec<String>) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut units: Vec<String> = walk(Path::new("/etc/systemd/system"));
    units.sort();
    (passwd, units)
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn the_deb_holds_the_service_and_installs_into_a_throwaway_root() {
    // Goal: the package has the binary, both units, the conffile, the user, the sysctls and
    // the docs; it installs and configures (user created, units enabled) without touching
    // the host; the installed zring runs; the conffile survives a reinstall; purge removes
    // it all. Method: build it from this test build's zring, read it with dpkg-deb, install
    // it into an empty root with dpkg --root, then reinstall and purge there.
    let dir = temp_dir("package");
    let deb = build_deb(&dir);
    let info = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for want in [
        "Package: zring\n",
        &format!("Version: {VERSION}\n"),
        "Depends: libc6 (>= ",
        "systemd | systemd-sysusers",
        " conffiles ",
        " postinst ",
        " prerm ",
        " postrm ",
    ] {
        assert!(info.contains(want), "no {want:?} in:\n{info}");
    }
    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mode_of = |path: &str| {
        contents
            .lines()
            .find(|l| l.ends_with(path) || l.contains(&format!("{path} -> ")))
            .unwrap_or_else(|| panic!("no {path} in:\n{contents}"))
            .to_owned()
    };
    assert!(mode_of("./usr/bin/zring").starts_with("-rwxr-xr-x root/root"));
    for f in [
        "./lib/systemd/system/zring.service",
        "./lib/systemd/system/zring.socket",
        "./etc/zring/zring.conf",
        "./usr/lib/sysusers.d/zring.conf",
        "./usr/lib/sysctl.d/60-zring.conf",
        "./usr/share/man/man1/zring.1.gz",
        "./usr/share/doc/zring/zring-help.txt",
        "./usr/share/doc/zring/operations.md",
        "./usr/share/doc/zring/copyright",
    ] {
        assert!(
            mode_of(f).starts_with("-rw-r--r-- root/root"),
            "{}",
            mode_of(f)
        );
    }
    // The `mongrel2` name, beside and not over Debian's /usr/bin/mongrel2.
    assert!(mode_of("./usr/libexec/zring/mongrel2").ends_with("-> ../../bin/zring"));
    assert!(!contents.contains("./usr/bin/mongrel2"), "{contents}");

    let host = host_state();
    let root = dpkg_root(&dir);
    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    assert_eq!(status(&root), "ii ");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("zring:x:") && l.ends_with(":/usr/sbin/nologin")),
        "{passwd}"
    );
    for link in [
        "etc/systemd/system/sockets.target.wants/zring.socket",
        "etc/systemd/system/multi-user.target.wants/zring.service",
    ] {
        let target = std::fs::read_link(root.join(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert!(
            target.ends_with(Path::new(link).file_name().unwrap()),
            "{target:?}"
        );
    }
    assert_eq!(host_state(), host, "the install touched the host");

    // The installed binary runs; its help is the one in the docs and in the man page.
    let bin = root.join("usr/bin/zring");
    assert_eq!(
        stdout(Command::new(&bin).arg("--version")),
        format!("zring {VERSION}\n")
    );
    let help = stdout(Command::new(&bin).arg("--help"));
    assert!(
        help.contains("--takeover-socket") && help.contains("--m2-config"),
        "{help}"
    );
    let doc = std::fs::read_to_string(root.join("usr/share/doc/zring/zring-help.txt")).unwrap();
    assert_eq!(doc, help);
    let man = stdout(Command::new("zcat").arg(root.join("usr/share/man/man1/zring.1.gz")));
    assert!(
        man.starts_with(".TH ZRING 1") && man.contains("--takeover-socket"),
        "{man}"
    );
    let m2 = root.join("usr/libexec/zring/mongrel2");
    assert_eq!(
        stdout(Command::new(&m2).arg("--version")),
        format!("zring {VERSION}\n")
    );

    // A conffile: an edit survives reinstalling the package (dpkg keeps the admin's file).
    let conf = root.join("etc/zring/zring.conf");
    let edited = format!("{}log-level 3\n", std::fs::read_to_string(&conf).unwrap());
    std::fs::write(&conf, &edited).unwrap();
    dpkg(&root, &["--force-confold", "-i", deb.to_str().unwrap()]);
    assert_eq!(status(&root), "ii ");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);

    // Purge: files, the conffile and the units' enablement go.
    dpkg(&root, &["--purge", "zring"]);
    for gone in [
        "usr/bin/zring",
        "etc/zring/zring.conf",
        "etc/systemd/system/sockets.target.wants/zring.socket",
        "etc/systemd/system/multi-user.target.wants/zring.service",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} is still there"
        );
    }
    assert_eq!(host_state(), host, "the purge touched the host");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The system calls a `SystemCallFilter=` set names, its nested sets expanded
/// (`systemd-analyze syscall-filter`).
fn syscalls(name: &str, depth: u32) -> Vec<String> {
    assert!(depth < 8, "syscall sets nested too deep at {name}");
    if !name.starts_with('@') {
        return vec![name.to_owned()];
    }
    let text = stdout(Command::new("systemd-analyze").args(["syscall-filter", name]));
    let mut out = Vec::new();
    for line in text.lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.extend(syscalls(line, depth + 1));
    }
    out
}

#[test]
fn the_installed_units_verify_and_their_hardening_allows_io_uring() {
    // Goal: both units pass `systemd-analyze verify` with no warning, the service's
    // hardening scores as OK, its system call allow-list lets io_uring be set up (else
    // `--runtime auto` would fall back to epoll), and the socket unit listens where the
    // default config serves. Method: install the package into a throwaway root that also
    // holds the host's targets and /bin/kill (what the units name), then run systemd's
    // checks against that root.
    let dir = temp_dir("package-units");
    let deb = build_deb(&dir);
    let root = dpkg_root(&dir);
    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let units = root.join("lib/systemd/system");
    for e in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".target") && e.path().is_file() {
            std::fs::copy(e.path(), units.join(name)).unwrap();
        }
    }
    let rooted = format!("--root={}", root.display());
    let out = run(Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            &rooted,
            "zring.service",
            "zring.socket",
        ])
        .current_dir(&dir));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify: {warnings}"
    );
    // Exposure 0-10 in tenths: fail above 3.0 ("OK" ends at 3.9 in systemd's words).
    run(Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "--threshold=30",
            &rooted,
            "zring.service",
        ])
        .current_dir(&dir));

    let service = std::fs::read_to_string(units.join("zring.service")).unwrap();
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for value in service
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let calls = list.split_whitespace().flat_map(|n| syscalls(n, 0));
        if deny {
            denied.extend(calls)
        } else {
            allowed.extend(calls)
        }
    }
    assert!(!allowed.is_empty(), "no allow-list in:\n{service}");
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(
            allowed.iter().any(|c| c == call),
            "{call} not allowed by:\n{service}"
        );
        assert!(
            !denied.iter().any(|c| c == call),
            "{call} denied by:\n{service}"
        );
    }
    // What else zring calls: epoll, its fd limit, worker pinning, the takeover's sigqueue.
    for needed in [
        "epoll_wait",
        "setrlimit",
        "sched_setaffinity",
        "accept4",
        "rt_sigqueueinfo",
    ] {
        assert!(
            allowed.iter().any(|c| c == needed),
            "{needed} not allowed by:\n{service}"
        );
    }

    // zring.socket listens on the port the default config serves (matched by address).
    let socket = std::fs::read_to_string(units.join("zring.socket")).unwrap();
    let conf = std::fs::read_to_string(root.join("etc/zring/zring.conf")).unwrap();
    let port = |s: &str| {
        s.rsplit(':')
            .next()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned()
    };
    let streams: Vec<String> = socket
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .map(port)
        .collect();
    let listens: Vec<String> = conf
        .lines()
        .filter_map(|l| l.strip_prefix("listen "))
        .map(port)
        .collect();
    assert!(!streams.is_empty());
    assert_eq!(streams, listens, "zring.socket and zring.conf disagree");
    let _ = std::fs::remove_dir_all(&dir);
}

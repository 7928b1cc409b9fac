//! The process helper's guarantee (`support::proc`): nothing a test starts outlives the test
//! process, however that process ends: Drop on the ordinary paths, `PR_SET_PDEATHSIG` when
//! Drop never runs (SIGKILL, abort, a panic while another thread holds the process).
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::proc::{pid_alive, Proc};
use support::Stack;

/// Set in the environment of the helper run: how the helper process should end.
const HOW: &str = "ZRING_LEFTOVERS_HELPER";

/// Not a test by itself (it returns at once): the child process of `dies_with_*`, which run
/// this binary again with only this test and `HOW` set. It starts zring through `Stack`,
/// prints zring's pid, and ends the way it was told to.
#[test]
fn helper() {
    let Ok(how) = std::env::var(HOW) else {
        return;
    };
    // Started on a thread that ends right away: the child must not die with that thread
    // (pdeathsig follows the forking thread; `Proc` forks on its long-lived spawner).
    let stack = std::thread::spawn(|| Stack::zring_only("epoll", &[]))
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pid_alive(stack.zring.pid()),
        "zring died with the thread that started it"
    );
    println!("\nzring-pid {}", stack.zring.pid());
    std::io::stdout().flush().unwrap();
    match how.as_str() {
        "abort" => std::process::abort(),
        "panic-elsewhere" => {
            // The stack lives on in a thread nobody joins; the test fails and the harness
            // exits the process without dropping it (how parity runs used to leak zring).
            std::thread::spawn(move || {
                let _held = stack;
                std::thread::sleep(Duration::from_secs(3600));
            });
            std::thread::sleep(Duration::from_millis(100));
            panic!("the test fails while another thread holds zring");
        }
        _ => {
            // Wait to be SIGKILLed.
            std::thread::sleep(Duration::from_secs(3600));
            drop(stack);
        }
    }
}

/// Runs `helper` in a new process that ends per `how`; returns zring's pid once the helper
/// process is gone.
fn zring_of_dead_helper(how: &str) -> i32 {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper", "--nocapture", "--test-threads", "1"])
        .env(HOW, how)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut helper = Proc::start("helper", &mut cmd);
    // libtest prints its own lines first.
    let pid: i32 = BufReader::new(helper.take_stdout().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("zring-pid ").and_then(|p| p.parse().ok()))
        .expect("the helper prints zring's pid");
    assert!(pid_alive(pid));
    if how == "sigkill" {
        helper.signal(libc::SIGKILL);
    }
    helper
        .wait_exit(Duration::from_secs(10))
        .expect("helper process ends");
    pid
}

/// zring must be gone (or a zombie waiting for init) soon after the helper died.
fn assert_gone_soon(pid: i32, how: &str) {
    let end = Instant::now() + Duration::from_secs(2);
    while pid_alive(pid) {
        assert!(
            Instant::now() < end,
            "zring {pid} still running 2 s after its test process ended ({how})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dies_with_a_sigkilled_test_process() {
    let pid = zring_of_dead_helper("sigkill");
    assert_gone_soon(pid, "sigkill");
}

#[test]
fn dies_with_an_aborted_test_process() {
    let pid = zring_of_dead_helper("abort");
    assert_gone_soon(pid, "abort");
}

#[test]
fn dies_with_a_test_process_that_fails_elsewhere() {
    let pid = zring_of_dead_helper("panic-elsewhere");
    assert_gone_soon(pid, "panic-elsewhere");
}

/// Drop kills the process group too: what the child started and left behind.
#[test]
fn drop_kills_what_the_child_started() {
    let mut sh = Proc::start(
        "sh",
        Command::new("/bin/sh")
            .args(["-c", "sleep 600 & echo $!; wait"])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(sh.take_stdout().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleep: i32 = line.trim().parse().unwrap();
    assert!(pid_alive(sleep));
    drop(sh);
    assert_gone_soon(sleep, "drop");
}

/// `exited` reports the status without reaping (the pid stays ours until Drop).
#[test]
fn exit_status_without_reaping() {
    let mut p = Proc::start("sh", Command::new("/bin/sh").args(["-c", "exit 3"]));
    let st = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(3));
    assert!(std::path::Path::new(&format!("/proc/{}", p.pid())).exists());
    let mut p = Proc::start("sleep", Command::new("sleep").arg("600"));
    p.signal(libc::SIGKILL);
    use std::os::unix::process::ExitStatusExt;
    let st = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

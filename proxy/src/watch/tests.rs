//! The watch on its own: events, debouncing, and paths that move under it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::*;

const DEBOUNCE: Duration = Duration::from_millis(100);

/// Counts `on_change` calls.
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits up to `within` for at least `n` calls.
    fn reach(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.get() >= n {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
        self.get() >= n
    }
}

/// Waits `d` (`park_timeout` may wake early, so it loops until the deadline).
fn pause(d: Duration) {
    let deadline = Instant::now() + d;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        std::thread::park_timeout(left);
    }
}

/// Watches `folder` for any event, as the policy watch does.
fn watch_folder(folder: PathBuf) -> (PathWatch, Calls) {
    watch(move || Targets {
        folders: BTreeSet::from([folder.clone()]),
        names: HashSet::new(),
    })
}

/// Watches the folder of `file` for events naming it, as the identity watch does.
fn watch_file(file: PathBuf) -> (PathWatch, Calls) {
    watch(move || Targets {
        folders: BTreeSet::from([parent(&file)]),
        names: HashSet::from([file.file_name().unwrap().to_owned()]),
    })
}

fn watch(resolve: impl Fn() -> Targets + Send + 'static) -> (PathWatch, Calls) {
    watch_with_net(resolve, SAFETY_NET)
}

fn watch_with_net(
    resolve: impl Fn() -> Targets + Send + 'static,
    safety_net: Duration,
) -> (PathWatch, Calls) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let spec = Spec {
        what: "test",
        resolve: Box::new(resolve),
        debounce: DEBOUNCE,
        max_delay: Duration::from_millis(500),
        safety_net,
    };
    let guard = PathWatch::spawn(spec, move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    (guard, Calls(calls))
}

/// Makes `link` point at `target` atomically, as a deploy tool does: a new link renamed over.
fn repoint(link: &Path, target: &str) {
    let mut name = link.file_name().unwrap().to_owned();
    name.push(".tmp");
    let tmp = link.with_file_name(name);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
fn a_burst_of_writes_to_a_watched_file_becomes_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svid.pem");
    std::fs::write(&file, "a").unwrap();
    let (_guard, calls) = watch_file(file.clone());
    for i in 0..5 {
        std::fs::write(&file, format!("{i}")).unwrap();
    }
    assert!(calls.reach(1, Duration::from_secs(5)));
    pause(DEBOUNCE * 3);
    assert_eq!(calls.get(), 1);
}

#[test]
fn a_kubernetes_style_data_link_swap_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, calls) = watch_file(dir.path().join("svid.pem"));
    std::fs::create_dir(dir.path().join("..2030_01_01")).unwrap();
    repoint(&dir.path().join("..data"), "..2030_01_01");
    assert!(calls.reach(1, Duration::from_secs(5)));
}

#[test]
fn other_files_in_the_folder_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, calls) = watch_file(dir.path().join("svid.pem"));
    std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
    pause(DEBOUNCE * 3 + POLL);
    assert_eq!(calls.get(), 0);
}

#[test]
fn dropping_the_guard_stops_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svid.pem");
    let (guard, calls) = watch_file(file.clone());
    drop(guard);
    std::fs::write(&file, "after").unwrap();
    pause(DEBOUNCE * 3);
    assert_eq!(calls.get(), 0);
}

#[test]
fn a_re_pointed_folder_symlink_is_seen_and_then_edits_in_its_new_target() {
    let dir = tempfile::tempdir().unwrap();
    for release in ["rel-v1", "rel-v2"] {
        std::fs::create_dir(dir.path().join(release)).unwrap();
    }
    let link = dir.path().join("policies");
    std::os::unix::fs::symlink("rel-v1", &link).unwrap();
    let (_guard, calls) = watch_folder(link.clone());

    repoint(&link, "rel-v2");
    assert!(calls.reach(1, Duration::from_secs(1)), "the re-point");
    pause(DEBOUNCE * 2);
    let after_move = calls.get();

    std::fs::write(dir.path().join("rel-v2/extra.cedar"), "x").unwrap();
    assert!(
        calls.reach(after_move + 1, Duration::from_secs(1)),
        "an edit in the new target"
    );
    pause(DEBOUNCE * 2);
    let after_edit = calls.get();

    // The folder the link no longer names is nobody's business.
    std::fs::write(dir.path().join("rel-v1/stale.cedar"), "x").unwrap();
    pause(DEBOUNCE * 3 + POLL);
    assert_eq!(calls.get(), after_edit);
}

#[test]
fn a_folder_renamed_over_the_watched_one_is_seen_and_then_edits_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("policies");
    std::fs::create_dir(&folder).unwrap();
    let (_guard, calls) = watch_folder(folder.clone());

    let staged = dir.path().join("policies.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("a.cedar"), "x").unwrap();
    let old = dir.path().join("policies.old");
    std::fs::rename(&folder, &old).unwrap();
    std::fs::rename(&staged, &folder).unwrap();
    std::fs::remove_dir_all(&old).unwrap();
    assert!(calls.reach(1, Duration::from_secs(1)), "the swap");
    pause(DEBOUNCE + POLL * 2);
    let after_swap = calls.get();

    std::fs::write(folder.join("b.cedar"), "y").unwrap();
    assert!(
        calls.reach(after_swap + 1, Duration::from_secs(1)),
        "an edit inside the new folder"
    );
}

#[test]
fn a_folder_that_goes_away_and_comes_back_is_watched_again() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("policies");
    std::fs::create_dir(&folder).unwrap();
    let (_guard, calls) = watch_folder(folder.clone());

    std::fs::remove_dir(&folder).unwrap();
    assert!(calls.reach(1, Duration::from_secs(1)), "the removal");
    pause(DEBOUNCE + POLL * 2);
    std::fs::create_dir(&folder).unwrap();
    pause(DEBOUNCE + POLL * 2);
    let after_return = calls.get();
    std::fs::write(folder.join("a.cedar"), "x").unwrap();
    assert!(calls.reach(after_return + 1, Duration::from_secs(1)));
}

#[test]
fn the_safety_net_reports_without_any_event() {
    // A folder whose events are all filtered out stands for a missed event: only the timer
    // can report it.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_owned();
    let (_guard, calls) = watch_with_net(
        move || Targets {
            folders: BTreeSet::from([folder.clone()]),
            names: HashSet::from([OsString::from("never-written")]),
        },
        Duration::from_millis(300),
    );
    std::fs::write(dir.path().join("policy.cedar"), "x").unwrap();
    assert!(
        calls.reach(2, Duration::from_secs(2)),
        "{} calls",
        calls.get()
    );
}
